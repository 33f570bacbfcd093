"""The one exception type for bad user input.

Raised anywhere (suites, algorithms, benchmarks) for things the user can fix: an unknown name, a
malformed file, a missing dataset or weight file.  The CLI prints its message as one line and exits
with code 2; the message names the thing and the fix.
"""


class UserError(Exception):
    """Bad input that the user can fix. The message is one line: what is wrong and how to fix it."""
