"""Container entrypoint: ``python -m airflow_gitops.dagsync [flags]`` runs the sync agent."""

from airflow_gitops.dagsync.agent import main

raise SystemExit(main())
