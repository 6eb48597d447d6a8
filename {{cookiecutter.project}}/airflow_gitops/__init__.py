"""Toolkit of this GitOps repository: validation, AWS setup and DAG sync, behind one CLI.

Run it as ``python -m airflow_gitops <command>``; the Makefile and the workflows do.
"""
