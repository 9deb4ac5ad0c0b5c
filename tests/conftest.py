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


@pytest.fixture(scope="session")
def seaweed():
    """One real S3-compatible server (SeaweedFS, on 127.0.0.1) behind the fault proxy, for
    the whole session; stopped, with its data, at the end."""
    from tests.s3server import SeaweedS3

    server = SeaweedS3()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_env(seaweed):
    """The standard AWS environment pointed at ``seaweed`` for a module, with a Ray started
    inside it (Ray's workers inherit the environment when Ray starts); faults cleared after.
    Retries are cut to 3 tries so that a fault that outlasts them fails within seconds."""
    import ray
    import s3fs

    from fiqa_core import storage
    from tests.helpers import environment

    env = {
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
        "AWS_DEFAULT_REGION": seaweed.region,
        "AWS_ENDPOINT_URL": seaweed.endpoint,
        "AWS_MAX_ATTEMPTS": "3",
        "RAY_ADDRESS": None,
    }
    with environment(**env):
        storage.configure_object_stores()
        s3fs.S3FileSystem.clear_instance_cache()
        ray.shutdown()
        try:
            yield seaweed
        finally:
            seaweed.faults.clear()
            ray.shutdown()
    storage.configure_object_stores()
    s3fs.S3FileSystem.clear_instance_cache()
