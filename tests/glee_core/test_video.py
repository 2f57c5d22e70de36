"""Videos: frame sources (folders, files, iterables), online streaming, official clip inference, exports, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gleekit.cli import app
from glee_core.predictor import GleePredictor
from glee_core.structures import Categories, Detections, Expression, Tracks
from glee_core.video_io import VideoReadError, iter_frames
from glee_core.visualize import save_tracks_gif
from train.data.shapeworld.scene import scene_seed
from train.data.shapeworld.video import generate_video


@pytest.fixture(scope="module")
def video():
    return [f.image for f in generate_video(scene_seed("test", 1), split="test").frames[:4]]


@pytest.fixture(scope="module")
def predictor():
    return GleePredictor.from_pretrained("nano")


def write_frames(folder, frames):
    folder.mkdir(exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:04d}.png")
    return folder


def test_frames_from_folder_list_generator_and_video_file(tmp_path, video):
    folder = write_frames(tmp_path / "clip", video)
    (folder / "README.txt").write_text("not a frame")
    for source in (folder, str(folder), list(video), (f for f in video)):
        frames = list(iter_frames(source))
        assert len(frames) == 4 and all(np.array_equal(a, b) for a, b in zip(frames, video))
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    decoded = list(iter_frames(path))
    assert len(decoded) == 4 and decoded[0].shape == (256, 256, 3)
    assert np.abs(decoded[0].astype(int) - video[0]).mean() < 12  # lossy codec, same picture


def test_bad_videos_name_the_frame_and_keep_earlier_ones(tmp_path, video):
    folder = write_frames(tmp_path / "clip", video)
    (folder / "0002.png").write_bytes(b"garbage")
    frames = iter_frames(folder)
    assert len([next(frames), next(frames)]) == 2  # frames before the broken one arrive
    with pytest.raises(VideoReadError, match="frame 2 cannot be read"):
        next(frames)
    limited = iter_frames(list(video), max_frames=3)
    assert len([next(limited) for _ in range(3)]) == 3
    with pytest.raises(VideoReadError, match="more than max_frames=3 frames; frames 0..2 were read"):
        next(limited)
    with pytest.raises(VideoReadError, match="does not exist"):
        list(iter_frames(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="no frame images"):
        list(iter_frames(tmp_path / "empty"))
    with pytest.raises(VideoReadError, match="cannot open video"):
        (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
        list(iter_frames(tmp_path / "broken.mp4"))
    with pytest.raises(VideoReadError, match="got one ndarray"):
        list(iter_frames(video[0]))


def test_stream_yields_as_it_goes_and_stops_at_a_size_change(predictor, video):
    frames = list(video[:2]) + [np.zeros((64, 64, 3), np.uint8)]
    stream = predictor.stream(frames, Categories(["circle", "square"]), score_threshold=0.1)
    done = [next(stream), next(stream)]
    assert all(isinstance(d, Detections) and d.track_ids is not None for d in done)
    with pytest.raises(ValueError, match=r"frame 2 is 64x64 \(WxH\), frame 0 is 256x256"):
        next(stream)
    with pytest.raises(TypeError, match="video prompts are Categories, an Expression or"):
        next(predictor.stream(video, "circle"))


def test_stream_continue_threshold_keeps_weak_detections_of_live_tracks_only(predictor, video):
    names = Categories(["circle", "square", "star"])
    plain = list(predictor.stream(video, names, score_threshold=0.3))
    weak = list(predictor.stream(video, names, score_threshold=0.3, continue_threshold=0.05))
    assert all((f.scores >= 0.3).all() for f in plain)
    started = set()
    for a, b in zip(plain, weak):
        confident = b.scores >= 0.3
        np.testing.assert_array_equal(np.sort(b.scores[confident]), np.sort(a.scores))  # the same confident ones
        assert set(b.track_ids[~confident].tolist()) <= started  # weak ones only continue earlier tracks
        started |= set(b.track_ids[confident].tolist())
    assert sum(int((f.scores < 0.3).sum()) for f in weak) > 0


def test_official_mode_is_the_clip_inference_and_windows_do_not_change_it(predictor, video):
    names = Categories(["circle", "square", "star"])
    whole = predictor.track(video, names, mode="official", score_threshold=0.0, window=10)
    pieces = predictor.track(video, names, mode="official", score_threshold=0.0, window=3)
    summaries = whole.track_summary()
    assert len(summaries) == 30 and [s.track_id for s in summaries] == list(range(1, 31))
    scores = [s.mean_score for s in summaries]
    assert scores == sorted(scores, reverse=True)  # ids in decreasing video score
    for a, b in zip(whole.frames, pieces.frames):
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        assert (a.masks != b.masks).mean() < 1e-3
    # A track's label and score are the same in every frame it appears in (one video-level result).
    for frame in whole.frames:
        for tid, label, score in zip(frame.track_ids, frame.labels, frame.scores):
            assert (label, pytest.approx(score)) == (summaries[tid - 1].label, summaries[tid - 1].mean_score)
    with pytest.raises(ValueError, match="mode must be 'online' or 'official'"):
        predictor.track(video, names, mode="fast")


def test_mot_export_and_gif(tmp_path, video):
    boxes = np.array([[10, 20, 40, 60]], np.float32)
    frames = [Detections(boxes=boxes + 5 * t, scores=[0.9], labels=[0], label_names=["circle"], image_size=(256, 256),
                         masks=np.zeros((1, 256, 256), bool), track_ids=[7]) for t in range(3)]
    tracks = Tracks(frames + [Detections.empty((256, 256), ["circle"], with_masks=True)])
    lines = tracks.to_mot().splitlines()
    assert lines == [f"{t + 1},7,{10 + 5 * t:.2f},{20 + 5 * t:.2f},30.00,40.00,0.9000,-1,-1,-1" for t in range(3)]
    path = save_tracks_gif(tmp_path / "a.gif", video, tracks, fps=5)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.info["duration"] == 200
    with pytest.raises(ValueError, match="fps must be positive"):
        save_tracks_gif(tmp_path / "b.gif", video, tracks, fps=0)


def test_track_command_writes_every_export(tmp_path, video):
    folder = write_frames(tmp_path / "clip", video[:3])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["track", str(folder), "--expression", "the circle", "--score-threshold", "0",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    tracks = Tracks.from_json_dict(json.loads((out / "tracks.json").read_text()))
    assert len(tracks) == 3 and all(len(f) == 1 for f in tracks.frames)
    assert len((out / "mot.txt").read_text().splitlines()) == 3
    ytvis = json.loads((out / "ytvis_results.json").read_text())
    assert {r["video_id"] for r in ytvis} == {1} and all(len(r["segmentations"]) == 3 for r in ytvis)
    with Image.open(out / "overlay.gif") as gif:
        assert gif.n_frames == 3
    bad = CliRunner().invoke(app, ["track", str(folder), "--out", str(out)])
    assert bad.exit_code == 2 and "exactly one of --categories and --expression" in bad.output
    bad = CliRunner().invoke(app, ["track", str(folder), "--categories", "a", "--max-frames", "2", "--out", str(out)])
    assert bad.exit_code == 1 and "more than max_frames=2" in bad.output


def test_visual_prompt_on_the_first_frame_is_followed_by_mask_propagation(predictor):
    from glee_core.mask_ops import interior_point, mask_iou
    from glee_core.structures import VisualPrompt

    means = []
    for k in range(4):  # held-out videos; the first object of frame 0 is pointed at
        clip = generate_video(scene_seed("test", k), split="test")
        target = clip.frames[0].track_ids[0]
        point = interior_point(clip.frames[0].objects[0].mask)
        tracks = predictor.track([f.image for f in clip.frames], VisualPrompt(points=[point]), score_threshold=0.1)
        assert set(tracks.track_ids.tolist()) <= {1} and tracks.label_names == ["prompt 0"]
        ious = [float(mask_iou(d.masks[:1], f.objects[f.track_ids.index(target)].mask[None])[0, 0]) if len(d) else 0.0
                for f, d in zip(clip.frames, tracks.frames) if target in f.track_ids]
        means.append(np.mean(ious))
    # Measured with nano stage 3: 0.44 per video 0.78, 0.23, 0.75, 0.00 (lost from the first frames on).
    assert np.mean(means) >= 0.39, means
    with pytest.raises(TypeError, match="video prompts are"):
        predictor.track([clip.frames[0].image], VisualPrompt(points=[point]), mode="official")
