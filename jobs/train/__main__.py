import sys

from jobs import cli

raise SystemExit(cli.main(["train", *sys.argv[1:]]))
