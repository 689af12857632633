"""One state folder: the body-model cache, the local judge and the asset graph agree on it."""
from pathlib import Path

from orchestration.resources import default_state_dir
from vimogen_core.bench.judges import default_judge_dir
from vimogen_core.body.procedural import procedural_model_path
from vimogen_core.state import REPO_ROOT, state_dir


def test_every_state_default_is_the_one_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the working directory's .state
    monkeypatch.setenv("VIMOGEN_STATE_DIR", str(tmp_path / "chosen"))
    chosen = tmp_path / "chosen"
    assert state_dir() == chosen and Path(default_state_dir()) == chosen
    assert default_judge_dir().parent.parent == chosen
    assert procedural_model_path().parent.parent == chosen
    monkeypatch.delenv("VIMOGEN_STATE_DIR")
    assert state_dir() == REPO_ROOT / ".state" == Path(default_state_dir())
    assert default_judge_dir().parent.parent == REPO_ROOT / ".state"  # not ~/.cache, not the cwd
