"""The one exception type that means "the caller asked for something wrong"."""


class TrainerUserError(ValueError):
    """A request the trainer refuses because of its content (bad tokens, unknown loss, a
    checkpoint that does not fit this model...). The gateway maps it to a failed future with
    ``category: "user"``; any other exception is a server fault. The message is shown to the
    SDK user verbatim, so it says what was wrong and what to do instead."""
