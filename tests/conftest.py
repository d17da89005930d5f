import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A data cache private to the test session (nothing is read from or written to data/cache)."""
    path = tmp_path_factory.mktemp("data-cache")
    os.environ["STUDYLIB_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_processor():
    from studylib import models as M

    return M.build_processor("llava-tiny")


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, cache_dir):
    """A llava-tiny teacher trained for a few steps (the real training code, tiny sizes)."""
    from studylib import teacher as T

    cfg = T.TeacherConfig(preset="llava-tiny", n_train=200, stage1_steps=2, max_steps=4, batch_size=8)
    return T.ensure_teacher(cfg, tmp_path_factory.mktemp("ckpt"), cache_dir)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run much faster on one thread (and do not fight other processes for the cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
