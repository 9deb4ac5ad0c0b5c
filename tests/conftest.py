import os

# Never let a test wait on a model hub: offline, the hub client retries for ~46 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ACCEPT_CLUSTER_WARNINGS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tests import imagegen  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Real photographs (scikit-image's bundled samples), varied sizes and aspect ratios."""
    return imagegen.real_photos()


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (as the jobs start it), stopped at the end."""
    import ray

    from jobs.ray_env import init_ray

    init_ray(None, min_cpus=2)
    yield
    ray.shutdown()
