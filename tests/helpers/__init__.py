"""What the tests share (the fixtures built from these are in conftest.py), by what it builds:
paths and the tiny config (:mod:`.paths`), records (:mod:`.records`), tiny models and training
runs (:mod:`.training`), the workflow in a scratch copy and the scripts' CLIs
(:mod:`.workflow`), checkpoints of each model family and a GGUF writer (:mod:`.models`), local
servers (:mod:`.servers`)."""

from .models import *  # noqa: F403
from .paths import *  # noqa: F403
from .records import *  # noqa: F403
from .servers import *  # noqa: F403
from .training import *  # noqa: F403
from .workflow import *  # noqa: F403
