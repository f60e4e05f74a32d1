"""The one exception type for mistakes a user can make and fix, and how a script reports one."""

import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem in the user's input (env id, agent, config value, data file, checkpoint).

    The message is one sentence that names the problem and the fix; the CLI prints it without a traceback.
    """


def run_script(main: Callable[[], object]) -> None:
    """Runs a script's `main`; a UserError ends it with one `error:` line and exit status 2, without a traceback."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
