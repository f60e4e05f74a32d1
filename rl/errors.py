"""The one exception type for mistakes a user can make and fix, and how a script reports one."""

import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem in the user's input (env id, agent, config value, data file, checkpoint).

    The message is one sentence that names the problem and the fix; the CLI prints it without a traceback.
    """


class Diverged(UserError):
    """Training blew up (a non-finite TD error or loss): the run stops without saving over its last checkpoint."""


def run_script(main: Callable[[], object]) -> None:
    """Runs a script's `main`; a UserError ends it with one `error:` line and exit status 2, without a traceback."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def one_line(error: BaseException) -> str:
    """A library's multi-line message (torch's `load_state_dict` lists every mismatch) as its first detail line and
    a count of the rest, so that a UserError built from it stays one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0].rstrip(".") if lines else type(error).__name__
    first = lines[1] if lines[0].endswith(":") else lines[0]
    rest = len(lines) - (2 if lines[0].endswith(":") else 1)
    return first.rstrip(".") + (f" (and {rest} more)" if rest else "")
