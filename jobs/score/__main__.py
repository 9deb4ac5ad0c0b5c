import sys

from jobs import cli

raise SystemExit(cli.main(["score", *sys.argv[1:]]))
