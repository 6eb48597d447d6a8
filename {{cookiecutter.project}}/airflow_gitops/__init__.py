"""Toolkit of this GitOps repository: validation, AWS setup and DAG sync, behind one CLI.

Run it as ``python -m airflow_gitops <command>``; the Makefile and the workflows do.
"""

# The toolkit's version: this line is its one copy (`python -m airflow_gitops --version`).
# Bumped with each template release that changes the toolkit; `cruft update` brings it in.
__version__ = "0.1.0"
