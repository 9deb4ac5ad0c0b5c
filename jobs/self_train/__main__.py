from jobs.self_train import get_args_parser, main

raise SystemExit(main(get_args_parser().parse_args()))
