"""The one exception type for mistakes a user can make and fix."""


class UserError(Exception):
    """A problem in the user's input (env id, agent, config value, data file, checkpoint).

    The message is one sentence that names the problem and the fix; the CLI prints it without a traceback.
    """
