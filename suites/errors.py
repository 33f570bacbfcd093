"""The one exception type for bad user input.

Raised anywhere (suites, algorithms, benchmarks) for things the user can fix: an unknown name, a
malformed file, a missing dataset or weight file.  The CLI prints its message as one line and exits
with code 2; the message names the thing and the fix.
"""


class UserError(Exception):
    """Bad input that the user can fix. The message is one line: what is wrong and how to fix it."""


def run_script(main) -> None:
    """`python -m` entry of a script: exit with main()'s code; a UserError is one line and exit code 2."""
    import sys

    try:
        sys.exit(main())
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
