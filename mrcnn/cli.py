"""What the samples' command lines share: run a parsed command and turn bad
input into one line on stderr and an exit code, not a traceback."""
import sys

__all__ = ["run_command"]


def run_command(parser, argv, check_args, run):
    """Parse ``argv`` with ``parser``, check it, run it.

    check_args(parser, args): raises through ``parser.error`` on bad flags.
    run(args): the command. OSError and ValueError (missing or broken files,
        failed downloads, contradictory settings; their messages name the file
        and the fix) become ``<prog>: error: <message>`` and exit code 2,
        unless ``args.traceback`` asks for the traceback.

    Returns the exit code: 0 done, 2 bad input, 130 interrupted.
    """
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        run(args)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        if getattr(args, "traceback", False):
            raise
        message = " ".join(str(e).split())
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0
