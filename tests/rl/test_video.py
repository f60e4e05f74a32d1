"""`rl eval RUN --video DIR`: one mp4 per episode, frame for frame the episode that was evaluated, and one clear
error where there is nothing to film or nothing to film with."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gymnasium as gym
import imageio
import pytest
from gymnasium.wrappers import RecordVideo

import envs  # noqa: F401
from rl.cli import main
from rl.errors import UserError
from rl.evaluation import filmed_env


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    argv = ["train", "q_learning", "--env", "GridWorld-v0", "--total-steps", "5000", "--set", "alpha=0.1"]
    assert main([*argv, "--runs-dir", str(runs), "--quiet"]) == 0
    return next(runs.iterdir())


def frames_and_size(path: Path) -> tuple[int, tuple[int, int]]:
    reader = imageio.get_reader(path, "ffmpeg")
    try:
        return reader.count_frames(), tuple(reader.get_meta_data()["size"])
    finally:
        reader.close()


def test_each_episode_becomes_a_video_of_its_frames(capsys, tmp_path, trained_run):
    assert main(["eval", str(trained_run), "--episodes", "2", "--seed", "7"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    videos = tmp_path / "videos"
    assert main(["eval", str(trained_run), "--episodes", "2", "--seed", "7", "--video", str(videos)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == plain  # filming changes nothing evaluated
    paths = [Path(line.removeprefix("video: ")) for line in lines[:-1]]
    assert paths == [videos / f"{trained_run.name}-episode-{i}.mp4" for i in range(2)]
    assert sorted(videos.iterdir()) == paths

    env = gym.make("GridWorld-v0", render_mode="rgb_array")
    env.reset(seed=0)
    height, width, _ = env.render().shape
    for path in paths:
        # GridWorld's 100-step limit ends each episode: its first frame, then one per step.
        assert frames_and_size(path) == (101, (width, height))


def test_an_env_that_draws_no_frames_is_one_line(capsys, tmp_path):
    argv = ["train", "td0", "--env", "RandomWalk-v0", "--total-steps", "200", "--runs-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    run_dir = next(tmp_path.iterdir())
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--video", str(tmp_path / "videos")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: RandomWalk-v0 draws no RGB frames (its render modes: none), so there is no video to record; "
        "drop --video."
    )
    assert not (tmp_path / "videos").exists()


def test_without_moviepy_the_error_names_the_extra(capsys, tmp_path, trained_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "moviepy", None)  # `import moviepy` now fails as if it were not installed
    assert main(["eval", str(trained_run), "--video", str(tmp_path / "videos")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: recording videos needs moviepy") and 'pip install -e ".[video]"' in err


def test_a_file_in_place_of_the_video_directory_is_one_line(capsys, tmp_path, trained_run):
    (tmp_path / "videos").write_text("not a directory")
    assert main(["eval", str(trained_run), "--video", str(tmp_path / "videos")]) == 2
    assert "is a file; pass a directory" in capsys.readouterr().err


class BrokenCamera(gym.Env):
    """Says it draws RGB frames, then fails to, as MuJoCo does without an OpenGL library."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    observation_space = gym.spaces.Discrete(1)
    action_space = gym.spaces.Discrete(1)

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return 0, {}

    def render(self):
        raise RuntimeError("no OpenGL context")


def test_a_renderer_that_fails_here_is_one_line_naming_the_backends(tmp_path):
    if "BrokenCamera-v0" not in gym.registry:
        gym.register("BrokenCamera-v0", entry_point=BrokenCamera)
    with pytest.raises(UserError) as caught:
        filmed_env("BrokenCamera-v0", {}, tmp_path / "videos", "run")
    message = str(caught.value)
    assert message.startswith("BrokenCamera-v0 could not draw a frame here (RuntimeError: no OpenGL context)")
    assert "MUJOCO_GL=egl" in message and "\n" not in message and not (tmp_path / "videos").exists()


def test_mujoco_films_off_screen(capsys, tmp_path):
    pytest.importorskip("mujoco")
    argv = ["train", "sac", "--env", "InvertedPendulum-v5", "--total-steps", "300", "--set", "learning_starts=100"]
    assert main([*argv, "--runs-dir", str(tmp_path / "runs"), "--quiet", "--eval-episodes", "1"]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    capsys.readouterr()
    code = main(["eval", str(run_dir), "--episodes", "1", "--video", str(tmp_path / "videos")])
    if code == 2 and "could not draw a frame here" in (err := capsys.readouterr().err):
        pytest.skip(f"no OpenGL library for MuJoCo on this machine: {err.strip()}")
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # InvertedPendulum-v5 pays 1 for each step that does not end the episode, 0 for the one that does.
    steps = round(json.loads(lines[-1])["mean_return"]) + 1
    frames, size = frames_and_size(Path(lines[0].removeprefix("video: ")))
    assert frames == steps + 1 and size == (480, 480)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("", "error: --video needs a directory to write the videos to"),
        ("afile/videos", "error: cannot write videos to"),
    ],
)
def test_a_video_directory_that_cannot_be_written_is_one_line(capsys, tmp_path, trained_run, where, message):
    (tmp_path / "afile").write_text("a file, not a directory")
    target = str(tmp_path / where) if where else ""
    assert main(["eval", str(trained_run), "--episodes", "1", "--video", target]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def test_a_video_that_was_not_written_is_an_error_not_a_path(capsys, tmp_path, trained_run, monkeypatch):
    monkeypatch.setattr(RecordVideo, "stop_recording", lambda self: None)  # as when ffmpeg fails without a word
    assert main(["eval", str(trained_run), "--episodes", "1", "--video", str(tmp_path / "videos")]) == 2
    out, err = capsys.readouterr()
    assert "video:" not in out and err.strip().startswith("error: no video was written to")
