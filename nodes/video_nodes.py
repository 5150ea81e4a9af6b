"""Video in and out: VideoGrainLoadVideo and VideoGrainSaveVideo.

Decoding, encoding and the frame-selection rule live in `media` (PyAV/Pillow only); frames are sized by
`masks.geometry`, the same rule the mask loader uses, so frames and masks line up. Paths go through
`nodes.utils`. ComfyUI modules are imported inside the functions that need them.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
import torch

from ..masks.geometry import SIZE_MODES, apply_plan, plan_frames
from ..media import encode
from ..media.decode import MediaReadError, iter_source_frames, probe, read_audio
from ..media.files import is_video_file, list_frame_files, natural_key
from ..media.selection import FrameSelection, SelectionError
from .errors import VideoGrainInputError
from .notify import warn
from .utils import PathNotAllowed, fingerprint, input_dir, resolve_free_path, resolve_listed

LOAD = "VideoGrainLoadVideo"
SAVE = "VideoGrainSaveVideo"
SKIPPED_INPUT_DIRS = {"clipspace", "3d"}  # ComfyUI's own scratch folders under input/
READABLE = "an mp4/mov/webm/mkv/gif file or a folder of png/jpg/webp frames"
LARGE_PIXELS = 1024 * 1024  # SD1.5 was trained at 512²; past a megapixel a frame is far beyond its sizes
RAM_SHARE = 0.5  # refuse a load whose frames alone would take more than this share of free host memory


# --- finding the source ----------------------------------------------------------------------------


def list_input_videos(root: str) -> list[str]:
    """Video files and frame folders in `root` and one level below, as relative '/' paths; entries whose
    real path leaves `root` (a symlink out of it) are not listed."""
    found: list[str] = []
    real_root = os.path.realpath(root)

    def scan(rel: str, depth: int) -> None:
        folder = os.path.join(root, rel)
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            if name.startswith(".") or (depth == 0 and name in SKIPPED_INPUT_DIRS):
                continue
            item = f"{rel}/{name}" if rel else name
            full = os.path.join(folder, name)
            if not os.path.realpath(full).startswith(real_root + os.sep):
                continue
            if is_video_file(full):
                found.append(item)
            elif os.path.isdir(full):
                if list_frame_files(full):
                    found.append(item)
                if depth == 0:
                    scan(item, 1)

    scan("", 0)
    return sorted(found, key=natural_key)


def resolve_source(video: str, path: str = "") -> tuple[str, str]:
    """(full path, name of the input it came from): `path` when set, else `video` in the input folder.
    Raises VideoGrainInputError when the value resolves where this server may not read."""
    try:
        if path and path.strip():
            return resolve_free_path(path), "path"
        if not video:
            raise VideoGrainInputError(LOAD, "video", "no video is chosen",
                                       "upload a video or frame folder to ComfyUI's input folder and pick it, "
                                       "or set 'path'")
        return resolve_listed(video), "video"
    except PathNotAllowed as exc:
        name = "path" if path and path.strip() else "video"
        fix = ("pick a video from the list (files in ComfyUI's input folder)" if name == "video" else
               "copy the video into ComfyUI's input folder and pick it in 'video', or ask whoever runs the "
               "server to lift the confinement")
        raise VideoGrainInputError(LOAD, name, str(exc), fix) from exc


def _missing(input_name: str, full: str) -> VideoGrainInputError:
    fix = ("put the file in ComfyUI's input folder (or upload it) and pick it in the list"
           if input_name == "video" else "give the full path of an existing video file or frame folder")
    return VideoGrainInputError(LOAD, input_name, f"no video file or frame folder at {full}", fix)


def _unreadable(input_name: str, exc: MediaReadError, source: str) -> VideoGrainInputError:
    if exc.path and os.path.isdir(source) and exc.path != source:
        return VideoGrainInputError(LOAD, input_name, str(exc),
                                    f"replace or remove the damaged frame file {os.path.basename(exc.path)} "
                                    f"in {source}")
    return VideoGrainInputError(LOAD, input_name, str(exc), f"choose {READABLE}")


def _check_size(out_w: int, out_h: int, frames: int) -> None:
    """Refuse frames that would not fit in host memory; warn far beyond SD1.5's sizes."""
    image_bytes = frames * out_w * out_h * 3 * 4  # IMAGE is float32 RGB
    try:
        import psutil
        free = psutil.virtual_memory().available
    except ImportError:
        free = None
    need = f"{image_bytes / 2 ** 30:.1f} GiB for {frames} frames of {out_w}x{out_h} as IMAGE"
    if free is not None and image_bytes > RAM_SHARE * free:
        raise VideoGrainInputError(LOAD, "width", f"the frames would take {need}, more than half of the "
                                   f"{free / 2 ** 30:.1f} GiB of free memory",
                                   "lower width/height (SD1.5 works at 512 to 768) or frame_load_cap")
    if out_w * out_h > LARGE_PIXELS:
        latent = frames * 4 * (out_w // 8) * (out_h // 8) * 4
        warn(LOAD, f"{out_w}x{out_h} frames are far beyond SD1.5's 512x512: {need}, {latent / 2 ** 20:.0f} MiB "
                   "of latents, and attention memory grows with frames x pixels; 512 to 768 px is usual")


# --- loading ----------------------------------------------------------------------------------------


class VideoGrainLoadVideo:
    DESCRIPTION = ("Loads a video file (mp4, mov, webm, mkv, gif) or a folder of frames (png/jpg/webp, sorted "
                   "naturally) from ComfyUI's input folder or a path, decoding only the frames it keeps, and "
                   "sizes them for SD1.5 by the same rule VideoGrainLoadMasks applies to masks.")
    CATEGORY = "VideoGrain/io"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "INT", "FLOAT", "AUDIO", "INT", "INT")
    RETURN_NAMES = ("images", "frame_count", "fps", "audio", "source_width", "source_height")
    OUTPUT_TOOLTIPS = (
        "The selected frames, sized, as IMAGE [frames, height, width, 3].",
        "How many frames were loaded.",
        "Frame rate of the loaded frames: the source rate divided by select_every_nth (8 for a frame folder).",
        "The audio under the loaded frames (trimmed to their time span); None when the source has no audio.",
        "Width of the source frames before sizing.",
        "Height of the source frames before sizing.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (list_input_videos(input_dir()) or [""], {
                    "video_upload": True,
                    "tooltip": "A video file or frame folder in ComfyUI's input folder (or one level below). "
                               "Upload adds a file there."}),
                "frame_load_cap": ("INT", {"default": 16, "min": 0, "max": 100000, "step": 1, "tooltip":
                                   "Most frames to load (0 = all). Decoding stops once this many are kept."}),
                "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": 1000000, "step": 1, "tooltip":
                                      "Source frames to skip at the start."}),
                "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 1000, "step": 1, "tooltip":
                                     "Keep one frame in n after the skipped ones (2 halves the frame rate)."}),
                "size_mode": (list(SIZE_MODES), {"default": "keep_aspect", "tooltip":
                              "keep_aspect: fit inside width×height, sides rounded to multiples of 64, nothing "
                              "cut. crop: cover width×height and cut the centre. pad: fit inside and pad with "
                              "black."}),
                "width": ("INT", {"default": 512, "min": 0, "max": 8192, "step": 64, "tooltip":
                          "Target width (a multiple of 64 for SD1.5). 0 with keep_aspect: set by height, or "
                          "the source size when height is 0 too."}),
                "height": ("INT", {"default": 512, "min": 0, "max": 8192, "step": 64, "tooltip":
                           "Target height (a multiple of 64). 0 with keep_aspect: set by width."}),
            },
            "optional": {
                "path": ("STRING", {"default": "", "tooltip":
                         "A path to a video file or frame folder anywhere (relative paths start in the input "
                         "folder). When set, it is used instead of 'video'. A server shared on a network confines it "
                         "to ComfyUI's input, output and temp folders (VIDEOGRAIN_CONFINE_PATHS)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, video, path="", **_):
        if video is None and not path:  # linked input: the link itself keys the cache
            return ""
        try:
            return fingerprint(resolve_source(video or "", path or "")[0])
        except VideoGrainInputError:
            return "refused"  # validation or the run reports it

    @classmethod
    def VALIDATE_INPUTS(cls, path=""):
        # Only `path` is validated here (ComfyUI repeats a message for every argument of this hook).
        # `video` keeps core's check against the list, which holds only files inside the input folder;
        # the run resolves it again with real paths (a linked value, a symlink).
        if not path or not str(path).strip():
            return True
        try:
            full, name = resolve_source("", path)
        except VideoGrainInputError as exc:
            return str(exc)
        if not os.path.exists(full):
            return str(_missing(name, full))
        try:
            probe(full)
        except MediaReadError as exc:
            return str(_unreadable(name, exc, full))
        return True

    def load(self, video, frame_load_cap, skip_first_frames, select_every_nth, size_mode, width, height, path=""):
        from comfy.model_management import throw_exception_if_processing_interrupted
        from comfy.utils import ProgressBar

        full, name = resolve_source(video, path or "")
        if not os.path.exists(full):
            raise _missing(name, full)
        try:
            selection = FrameSelection(frame_load_cap, skip_first_frames, select_every_nth)
        except SelectionError as exc:
            raise VideoGrainInputError(LOAD, exc.input_name, exc.problem, exc.fix) from exc
        try:
            info = probe(full)
        except MediaReadError as exc:
            raise _unreadable(name, exc, full) from exc
        try:
            plan = plan_frames(info.width, info.height, size_mode, width, height)
        except ValueError as exc:
            raise VideoGrainInputError(LOAD, "width" if not width else "height", str(exc),
                                       "set both width and height above 0, or use size_mode keep_aspect") from exc
        expected = max(1, selection.count(info.frame_count)) if info.frame_count else max(1, frame_load_cap)
        _check_size(plan.out_w, plan.out_h, expected)

        pbar = ProgressBar(expected)  # the header's count may be an estimate
        frames: list[torch.Tensor] = []
        times: list[float] = []
        seen = 0
        source = iter_source_frames(full)

        def counted():
            nonlocal seen
            for item in source:
                seen += 1
                yield item

        try:
            for _, frame in selection.pick(counted()):
                throw_exception_if_processing_interrupted()
                rgb = frame.rgb()
                if rgb.shape[:2] != (info.height, info.width):
                    raise VideoGrainInputError(
                        LOAD, name, f"frame {frame.index} is {rgb.shape[1]}x{rgb.shape[0]} but the first frame is "
                        f"{info.width}x{info.height}", "use frames that all have one size")
                pixels = torch.from_numpy(rgb).unsqueeze(0).float().div_(255.0)
                frames.append(apply_plan(pixels, plan)[0])
                times.append(frame.time)
                pbar.update(1)
        except MediaReadError as exc:
            raise _unreadable(name, exc, full) from exc
        finally:
            source.close()

        if not frames:
            if seen == 0:
                raise _unreadable(name, MediaReadError(f"{full} holds no decodable frames", full), full)
            raise VideoGrainInputError(
                LOAD, "skip_first_frames", f"it skips {skip_first_frames} frames but the source has only {seen}, "
                "so no frame is left (frame_load_cap and select_every_nth always keep the first frame after the "
                "skip)", f"set skip_first_frames below {seen}")

        images = torch.stack(frames)
        fps = info.fps / select_every_nth
        audio = None
        if info.has_audio:
            # The span the kept frames cover on screen: first frame's time to one loaded-frame period past the last.
            track = read_audio(full, times[0], times[-1] + select_every_nth / info.fps)
            if track is not None and track[0].shape[1] > 0:
                audio = {"waveform": torch.from_numpy(track[0]).unsqueeze(0), "sample_rate": int(track[1])}
        return (images, len(frames), float(fps), audio, info.width, info.height)


# --- saving -----------------------------------------------------------------------------------------

FORMATS = {"mp4 (h264)": "mp4", "webp": "webp", "gif": "gif", "png frames": "png"}
MP4_COMMENT = "comfyui-videograin: the ComfyUI workflow is in the 'workflow' tag, the API prompt in 'prompt'"


def _metadata(prompt, extra_pnginfo) -> dict:
    """The workflow objects to embed ({} when ComfyUI runs with --disable-metadata)."""
    from comfy.cli_args import args
    if args.disable_metadata:
        return {}
    meta = {}
    if prompt is not None:
        meta["prompt"] = prompt
    if extra_pnginfo:
        meta.update(extra_pnginfo)
    return meta


def _audio_track(audio) -> Optional[tuple[np.ndarray, int]]:
    if audio is None:
        return None
    waveform = audio["waveform"]
    if waveform.ndim == 3:
        waveform = waveform[0]  # an AUDIO batch: the video gets the first item
    return waveform.detach().float().cpu().numpy(), int(audio["sample_rate"])


PREFIX_FIX = "give a name such as videograin/edit (a folder part is optional; the name itself must not be empty)"


def _prefix_problem(prefix: str) -> Optional[str]:
    """Why a filename prefix cannot name a file (an empty or hidden name), or None."""
    name = prefix.strip().replace("\\", "/").split("/")[-1]
    if not name:
        return f"{prefix!r} has no file name, so the video would be saved as a hidden file"
    if name.startswith("."):
        return f"{prefix!r} starts the file name with '.', which makes a hidden file"
    return None


class VideoGrainSaveVideo:
    DESCRIPTION = ("Saves frames as an mp4 (H.264, yuv420p, with AAC audio), an animated webp, a gif, or a folder "
                   "of png frames in ComfyUI's output folder. Every input frame becomes one output frame; files "
                   "are numbered and never overwritten; the workflow is embedded where the format allows.")
    CATEGORY = "VideoGrain/io"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("filename",)
    OUTPUT_TOOLTIPS = ("Full path of the saved file (the folder, for png frames).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames to save, in order."}),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 120.0, "step": 0.01, "tooltip":
                        "Frames per second (use the fps output of VideoGrainLoadVideo to keep the timing)."}),
                "filename_prefix": ("STRING", {"default": "videograin/edit", "tooltip":
                                    "Subfolder and name in the output folder; a counter is appended "
                                    "(edit_00001_.mp4, edit_00002_.mp4, ...)."}),
                "format": (list(FORMATS), {"default": "mp4 (h264)", "tooltip":
                           "mp4 (h264): small, plays everywhere, keeps audio. webp/gif: animated images "
                           "(no audio; gif has 256 colours per frame). png frames: lossless, one file per frame."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51, "step": 1, "tooltip":
                        "H.264 quality for mp4: lower is better and larger (0 lossless, 17-23 typical)."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Audio to mux into the mp4 (cut to the video's length); "
                                    "ignored by the other formats."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix):
        if isinstance(filename_prefix, str):
            problem = _prefix_problem(filename_prefix)
            if problem:
                return str(VideoGrainInputError(SAVE, "filename_prefix", problem, PREFIX_FIX))
        return True

    def save(self, images, fps, filename_prefix, format, crf, audio=None, prompt=None, extra_pnginfo=None):
        import folder_paths

        problem = _prefix_problem(filename_prefix)
        if problem:
            raise VideoGrainInputError(SAVE, "filename_prefix", problem, PREFIX_FIX)

        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[0] == 0:
            raise VideoGrainInputError(SAVE, "images", f"expected at least one frame, got shape {tuple(images.shape)}",
                                       "connect a non-empty IMAGE batch")
        if format not in FORMATS:
            raise VideoGrainInputError(SAVE, "format", f"unknown format {format!r}", f"pick one of {list(FORMATS)}")
        kind = FORMATS[format]
        frames = encode.to_uint8_frames(images.detach().float().cpu().numpy())
        height, width = frames.shape[1:3]
        if kind == "mp4" and (width % 2 or height % 2):
            warn(SAVE, f"H.264 needs even sides: the {width}x{height} frames are saved as "
                       f"{width + width % 2}x{height + height % 2} (last column/row repeated); save png frames to "
                       "keep the exact size")
        output_dir = folder_paths.get_output_directory()
        try:
            folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(
                filename_prefix, output_dir, width, height)
        except Exception as exc:  # core raises a bare Exception for prefixes that leave the output folder
            raise VideoGrainInputError(SAVE, "filename_prefix", f"{filename_prefix!r} points outside the output "
                                       "folder", "use a relative prefix such as videograin/edit") from exc

        meta = _metadata(prompt, extra_pnginfo)
        tags = {key: json.dumps(value) for key, value in meta.items()}
        track = _audio_track(audio)
        writers = {
            "mp4": lambda p: encode.write_mp4(p, frames, fps, crf, track,
                                                {"comment": MP4_COMMENT, **tags} if tags else None),
            "webp": lambda p: encode.write_webp(p, frames, fps, tags),
            "gif": lambda p: encode.write_gif(p, frames, fps, json.dumps(meta) if meta else None),
            "png": lambda p: encode.write_png_frames(p, frames, tags),
        }
        suffix = "" if kind == "png" else f".{kind}"
        final = encode.save_new(folder, lambda n: f"{stem}_{n:05}_{suffix}", counter, writers[kind],
                                  is_folder=kind == "png")

        name = os.path.basename(final)
        if kind == "png":
            sub = f"{subfolder}/{name}" if subfolder else name
            ui = {"images": [{"filename": f, "subfolder": sub, "type": "output"}
                             for f in list_frame_files(final) for f in [os.path.basename(f)]],
                  "animated": (False,)}
        else:
            ui = {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
        return {"ui": ui, "result": (final,)}


NODE_CLASS_MAPPINGS = {LOAD: VideoGrainLoadVideo, SAVE: VideoGrainSaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {LOAD: "VideoGrain Load Video", SAVE: "VideoGrain Save Video"}
