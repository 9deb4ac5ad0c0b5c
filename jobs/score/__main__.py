from jobs.score import get_args_parser, main

raise SystemExit(main(get_args_parser().parse_args()))
