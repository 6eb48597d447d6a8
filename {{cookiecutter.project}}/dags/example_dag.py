"""An example DAG that proves delivery end to end: if it shows up in the UI, DAGs arrive.

Replace it with your own; every file in dags/ ships the same way.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example"],
)
def example_delivery_check():
    @task
    def where_am_i() -> str:
        import socket

        return socket.gethostname()

    @task
    def report(host: str) -> None:
        print(f"example DAG ran on {host}")

    report(where_am_i())


example_delivery_check()
