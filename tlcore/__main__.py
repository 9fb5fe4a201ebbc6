import os
import sys

# Before TensorFlow loads: keep its C++ banner off stderr (errors are one line there).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")

from tlcore.cli.main import main  # noqa: E402

sys.exit(main())
