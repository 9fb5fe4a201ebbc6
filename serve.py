"""Starts the dashboard as `streamlit run app.py [options]` does, with Streamlit's legacy
pages-folder mode off from the first run (see app.py): `make run` and `make serve` use it."""

import sys

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import cli

if __name__ == "__main__":
    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", "run", "app.py", *sys.argv[1:]]
    sys.exit(cli.main())
