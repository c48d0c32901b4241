"""A budget search fanned out on a local Dask cluster gives the local result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
from distributed import Client, LocalCluster, get_task_stream
from sklearn.model_selection import GridSearchCV

from eenet_sklearn import EarlyExitPolicy
from eenet_sklearn.datasets import load_exit_logits

N_ROWS = 1000


def test_grid_search_on_dask_cluster_equals_local_search(
    tmp_path: Path, make_eenet: Callable[..., EarlyExitPolicy]
):
    data = load_exit_logits("mnist_mlp3")
    X, y, costs = data.val_logits[:N_ROWS], data.val_labels[:N_ROWS], data.costs
    budgets = [costs[0] + f * (costs[-1] - costs[0]) for f in (0.1, 0.3, 0.6)]

    def search() -> GridSearchCV:
        return GridSearchCV(make_eenet(costs=costs, max_epochs=3), {"budget": budgets}, cv=2)

    local = search().fit(X, y)
    # Worker processes, not threads: fits seed torch's process-wide RNG, so two fits
    # running in threads of one process would draw from each other's seeds.
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            local_directory=tmp_path,
        ) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as tasks,
        joblib.parallel_config(backend="dask"),
    ):
        remote = search().fit(X, y)
        addresses = set(client.scheduler_info()["workers"])

    workers = {task["worker"] for task in tasks.data}
    assert workers, "no fit ran on the cluster"
    assert workers <= addresses
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"])
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(
        remote.best_estimator_.predict_exit(data.test_logits[:N_ROWS]),
        local.best_estimator_.predict_exit(data.test_logits[:N_ROWS]),
    )
