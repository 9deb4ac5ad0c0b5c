import sys

from jobs import cli

raise SystemExit(cli.main(["self-train", *sys.argv[1:]]))
