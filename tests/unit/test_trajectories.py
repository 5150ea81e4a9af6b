"""Trajectory building (docs/design.md §10.1) against a brute-force pure-Python reference."""
import math
import time

import numpy as np
import pytest
import torch

from videograin.motion.trajectories import (TrajectoryError, Trajectories, build_trajectories, cell_shifts,
                                            keeper_priorities)


# ---------------------------------------------------------------- reference (plain Python, same rules)

def ref_shift(flow: np.ndarray, image_size, size, t, i, j):
    """(Δrow, Δcol) of cell (i, j): fp32 flow / max(H, W) at pixel (i·H//h, j·W//w), × max(h, w), round half even."""
    big_h, big_w = image_size
    h, w = size
    px = flow[t, i * big_h // h, j * big_w // w]
    cells = [np.float32(max(h, w)) * (np.float32(v) / np.float32(max(big_h, big_w))) for v in px]
    return round(float(cells[1])), round(float(cells[0]))  # Python's round() is half-to-even too


def ref_chains(flow: np.ndarray, image_size, size, seed):
    """All chains as lists of (t, r, c) in time order, following the module's rules one cell at a time."""
    h, w = size
    frames = flow.shape[0] + 1
    prio = keeper_priorities(frames, h * w, seed).tolist()
    link = {}
    for t in range(frames - 1):
        sources = {}
        for r in range(h):
            for c in range(w):
                dr, dc = ref_shift(flow, image_size, size, t, r, c)
                if 0 <= r + dr < h and 0 <= c + dc < w:
                    sources.setdefault((r + dr, c + dc), []).append((r, c))
        for (tr, tc), cands in sources.items():
            keeper = min(cands, key=lambda rc: prio[t][rc[0] * w + rc[1]])
            link[(t, *keeper)] = (t + 1, tr, tc)
    has_incoming = set(link.values())
    chains = []
    for t in range(frames):
        for r in range(h):
            for c in range(w):
                if (t, r, c) in has_incoming:
                    continue
                chain = [(t, r, c)]
                while chain[-1] in link:
                    chain.append(link[chain[-1]])
                chains.append(chain)
    return chains


def ref_rows(chains, size, frames, layout):
    """Expected slots (token indices, None = masked) per token; layout "chain" or ("official", window)."""
    h, w = size
    tok = lambda p: p[0] * h * w + p[1] * w + p[2]  # noqa: E731
    of = {p: ch for ch in chains for p in ch}
    longest = max(len(ch) for ch in chains)
    rows = {}
    for p, ch in of.items():
        others = [tok(q) for q in ch if q != p]
        if layout == "chain":
            rows[tok(p)] = [tok(p)] + others
            continue
        t, x, y = p
        win = layout[1]
        neigh = [tok((t, x + i, y + j)) for i in range(-win, win + 1) for j in range(-win, win + 1)
                 if (i, j) != (0, 0) and 0 <= x + i < h and 0 <= y + j < w]
        nb = (2 * win + 1) ** 2 - 1
        row = [tok(p)] + neigh + [None] * (nb - len(neigh)) + others + [None] * (longest - 1 - len(others))
        read = [row[0]] + (row[-(frames - 1):] if frames > 1 else row[-0:])
        rows[tok(p)] = read  # None = masked slot
    return rows


def check_against_reference(flow, image_size, size, seed, layout="chain"):
    frames = flow.shape[0] + 1
    traj = build_trajectories(torch.from_numpy(flow), image_size, [size], seed, layout=layout)[size]
    chains = ref_chains(flow, image_size, size, seed)
    win = 2 if size == (image_size[0] // 8, image_size[1] // 8) else 1
    rows = ref_rows(chains, size, frames, "chain" if layout == "chain" else ("official", win))
    index, valid = traj.index.tolist(), traj.valid.tolist()
    for n, expected in rows.items():
        if layout == "chain":
            got = [i for i, ok in zip(index[n], valid[n]) if ok]
            assert got == expected, f"token {n}"
            assert valid[n] == [True] * len(expected) + [False] * (frames - len(expected))  # packed
        else:
            assert len(index[n]) == len(expected)
            assert valid[n] == [e is not None for e in expected], f"token {n}"
            assert [i if ok else None for i, ok in zip(index[n], valid[n])] == expected, f"token {n}"
        assert all(i == n for i, ok in zip(index[n], valid[n]) if not ok)  # padding points at the token
    # chain ids partition the tokens exactly like the reference chains
    tok = lambda p: p[0] * size[0] * size[1] + p[1] * size[1] + p[2]  # noqa: E731
    ids = traj.chain.tolist()
    for ch in chains:
        assert len({ids[tok(p)] for p in ch}) == 1
    assert len(set(ids)) == len(chains)
    return traj, chains


def invariants(traj: Trajectories):
    cells = traj.size[0] * traj.size[1]
    n = torch.arange(traj.tokens)
    assert torch.equal(traj.index[:, 0], n) and bool(traj.valid[:, 0].all())  # slot 0 is the token
    member_frames = torch.where(traj.valid, traj.index // cells, torch.full_like(traj.index, -1))
    for row in member_frames.tolist():  # at most one cell per frame per chain
        row = [f for f in row if f >= 0]
        assert len(row) == len(set(row))
    counts = torch.bincount(traj.chain)  # every token in exactly one chain, rows agree within a chain
    assert counts.sum() == traj.tokens and bool((traj.valid.sum(1) == counts[traj.chain]).all())


# ---------------------------------------------------------------- synthetic flows (pixels)

def cells_to_pixels(shift_rc: np.ndarray, image_size, size) -> np.ndarray:
    """Per-cell (Δrow, Δcol) [F-1, h, w, 2] -> a pixel flow [F-1, H, W, 2] (x, y) that the builder reads back."""
    big_h, big_w = image_size
    h, w = size
    per_cell = max(big_h, big_w) / max(h, w)
    flow = np.zeros((shift_rc.shape[0], big_h, big_w, 2), np.float32)
    rows = np.arange(big_h) * h // big_h  # every pixel takes its block's value (the builder samples one)
    cols = np.arange(big_w) * w // big_w
    block = shift_rc[:, rows][:, :, cols]
    flow[..., 0] = block[..., 1] * per_cell
    flow[..., 1] = block[..., 0] * per_cell
    return flow


def rotation_flow(frames, image_size, degrees):
    big_h, big_w = image_size
    y, x = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
    cy, cx = (big_h - 1) / 2, (big_w - 1) / 2
    a = math.radians(degrees)
    nx = cx + (x - cx) * math.cos(a) - (y - cy) * math.sin(a)
    ny = cy + (x - cx) * math.sin(a) + (y - cy) * math.cos(a)
    flow = np.stack([nx - x, ny - y], -1).astype(np.float32)
    return np.repeat(flow[None], frames - 1, axis=0)


SIZES = [((48, 80), (6, 10)), ((80, 48), (10, 6)), ((64, 64), (8, 8))]


@pytest.mark.parametrize("frames", range(2, 9))
@pytest.mark.parametrize("image_size,size", SIZES)
def test_zero_flow_gives_straight_chains_through_all_frames(frames, image_size, size):
    flow = np.zeros((frames - 1, *image_size, 2), np.float32)
    traj, chains = check_against_reference(flow, image_size, size, seed=0)
    assert len(chains) == size[0] * size[1] and all(len(ch) == frames for ch in chains)
    cells = size[0] * size[1]
    expected = (torch.arange(traj.tokens) % cells).view(-1, 1) + torch.arange(frames).view(1, -1) * cells
    for n in range(0, traj.tokens, 7):  # slot 0 self, then the same cell in the other frames in time order
        others = [int(x) for x in expected[n] if int(x) != n]
        assert traj.index[n].tolist() == [n] + others
    invariants(traj)


@pytest.mark.parametrize("shift", [(0, 1), (2, 0), (-3, 1), (1, -2), (3, 3)])
@pytest.mark.parametrize("image_size,size", SIZES)
def test_constant_shifts_end_chains_at_the_edge(shift, image_size, size):
    frames = 5
    rc = np.broadcast_to(np.array(shift, np.int64), (frames - 1, *size, 2))
    flow = cells_to_pixels(rc, image_size, size)
    traj, chains = check_against_reference(flow, image_size, size, seed=3)
    invariants(traj)
    h, w = size
    for ch in chains:  # consecutive members are exactly one shift apart; a chain ends only at the edge
        for a, b in zip(ch, ch[1:]):
            assert (b[1] - a[1], b[2] - a[2]) == shift
        t, r, c = ch[-1]
        assert t == frames - 1 or not (0 <= r + shift[0] < h and 0 <= c + shift[1] < w)


@pytest.mark.parametrize("frames", [2, 4, 8])
@pytest.mark.parametrize("degrees", [7.0, -20.0])
@pytest.mark.parametrize("image_size,size", SIZES)
def test_rotation_matches_reference(frames, degrees, image_size, size):
    traj, _ = check_against_reference(rotation_flow(frames, image_size, degrees), image_size, size, seed=11)
    invariants(traj)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("image_size,size", SIZES)
def test_random_collisions_and_exits_match_reference(seed, image_size, size):
    frames = 6
    g = np.random.default_rng(seed)
    rc = g.integers(-2, 3, size=(frames - 1, *size, 2))  # many cells share targets, many leave the grid
    flow = cells_to_pixels(rc, image_size, size)
    traj, chains = check_against_reference(flow, image_size, size, seed=seed)
    invariants(traj)
    assert len(chains) > size[0] * size[1]  # collisions and exits started new chains


def test_collision_keeper_is_the_lowest_priority_and_seeded():
    image_size, size = (8, 32), (1, 4)
    rc = np.zeros((1, 1, 4, 2), np.int64)
    rc[0, 0, 0, 1] = 1   # cell 0 -> cell 1, colliding with cell 1 (which stays)
    rc[0, 0, 2, 1] = 1   # cell 2 -> cell 3, colliding with cell 3 (which stays)
    flow = torch.from_numpy(cells_to_pixels(rc, image_size, size))
    for seed in range(6):
        prio = keeper_priorities(2, 4, seed)[0]
        traj = build_trajectories(flow, image_size, [size], seed)[size]
        for src, tgt in ((0, 1), (2, 3)):
            keeper = src if prio[src] < prio[tgt] else tgt
            loser = tgt if keeper == src else src
            assert traj.index[keeper].tolist() == [keeper, 4 + tgt] and traj.valid[keeper].all()
            assert traj.valid[loser].tolist() == [True, False]  # its chain ended
        again = build_trajectories(flow, image_size, [size], seed)[size]
        assert torch.equal(traj.index, again.index) and torch.equal(traj.valid, again.valid)
    outcomes = {tuple(build_trajectories(flow, image_size, [size], s)[size].valid[:, 1].tolist()) for s in range(12)}
    assert len(outcomes) > 1  # the seed does decide


def test_sizes_are_independent_of_each_other():
    flow = torch.from_numpy(rotation_flow(4, (64, 64), 15.0))
    alone = build_trajectories(flow, (64, 64), [(4, 4)], seed=5)[(4, 4)]
    together = build_trajectories(flow, (64, 64), [(8, 8), (4, 4)], seed=5)[(4, 4)]
    assert torch.equal(alone.index, together.index) and torch.equal(alone.valid, together.valid)


def test_cell_shift_sampling_and_round_half_to_even():
    image_size, size = (32, 32), (4, 4)  # 8 pixels per cell
    flow = torch.zeros(1, 32, 32, 2)
    flow[0, 0, 0] = torch.tensor([4.0, -4.0])     # ±0.5 cell -> 0
    flow[0, 8, 8] = torch.tensor([12.0, -12.0])   # ±1.5 cells -> ±2
    flow[0, 9, 9] = torch.tensor([100.0, 100.0])  # not a block's top-left pixel: ignored
    flow[0, 16, 0] = torch.tensor([20.0, 3.9])    # 2.5 -> 2, 0.4875 -> 0
    shifts = cell_shifts(flow, image_size, size)
    assert shifts[0, 0, 0].tolist() == [0, 0]
    assert shifts[0, 1, 1].tolist() == [-2, 2]    # (Δrow, Δcol)
    assert shifts[0, 2, 0].tolist() == [0, 2]
    assert int(shifts.abs().sum()) == 6


def test_non_integer_block_ratio_samples_the_floor_pixel():
    flow = torch.zeros(1, 50, 70, 2)
    rows, cols = [i * 50 // 7 for i in range(7)], [j * 70 // 9 for j in range(9)]
    flow[0, rows[3], cols[4], 0] = 70.0 / 9 * 1.2  # 1.2 cells at max side 9/70 -> one column right
    flow[0, rows[3] + 1, cols[4] + 1, 0] = 500.0   # inside the block but not its sampled pixel
    shifts = cell_shifts(flow, (50, 70), (7, 9))
    assert shifts[0, 3, 4].tolist() == [0, 1] and int(shifts.abs().sum()) == 1
    check_against_reference(flow.numpy(), (50, 70), (7, 9), seed=0)


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("kind", ["zero", "shift", "random"])
@pytest.mark.parametrize("image_size,size", [((48, 80), (6, 10)), ((16, 24), (2, 3))])
def test_official_layout_matches_reference(frames, kind, image_size, size):
    if kind == "zero":
        flow = np.zeros((frames - 1, *image_size, 2), np.float32)
    else:
        rc = (np.broadcast_to(np.array([1, -1]), (frames - 1, *size, 2)) if kind == "shift"
              else np.random.default_rng(frames).integers(-2, 3, size=(frames - 1, *size, 2)))
        flow = cells_to_pixels(rc, image_size, size)
    traj, _ = check_against_reference(flow, image_size, size, seed=2, layout="official")
    assert traj.layout == "official" and bool(traj.valid[:, 0].all())


def test_official_layout_reads_neighbours_when_chains_are_short():
    image_size, size = (48, 80), (6, 10)
    rc = np.broadcast_to(np.array([0, 3]), (4, *size, 2))  # long jumps: chains of at most 4 of 5 frames
    traj = build_trajectories(torch.from_numpy(cells_to_pixels(rc, image_size, size)), image_size, [size], 0,
                              layout="official")[size]
    cells = 60
    same_frame = (traj.index // cells == (torch.arange(traj.tokens) // cells).view(-1, 1)) & traj.valid
    assert bool((same_frame[:, 1:].sum(1) > 0).any())  # the quirk: some same-frame neighbour slots are read


@pytest.mark.parametrize("frames", [4, 12])
def test_official_layout_on_a_lower_level_and_a_short_row(frames):
    """Window 1 below the top level; with chains of length 1 and F = 12 the row (9 slots) is shorter than
    F - 1, so the slice reads the whole row and slot 0 twice (docs/design.md §10.1)."""
    image_size, size = (48, 80), (3, 5)
    rc = np.broadcast_to(np.array([0, 9]), (frames - 1, *size, 2))  # every link leaves the grid
    traj, chains = check_against_reference(cells_to_pixels(rc, image_size, size), image_size, size, 0,
                                           layout="official")
    assert max(len(ch) for ch in chains) == 1
    if frames == 12:
        assert traj.index.shape[1] == 1 + 9 and torch.equal(traj.index[:, 1], traj.index[:, 0])
        assert bool(traj.valid[:, 1].all())


def test_bad_inputs_are_named():
    flow = torch.zeros(2, 16, 16, 2)
    with pytest.raises(TrajectoryError, match="unknown trajectory layout"):
        build_trajectories(flow, (16, 16), [(2, 2)], 0, layout="last")
    with pytest.raises(TrajectoryError, match="image is 8x16"):
        build_trajectories(flow, (16, 8), [(2, 2)], 0)
    with pytest.raises(TrajectoryError, match="latent size 32x2"):
        build_trajectories(flow, (16, 16), [(32, 2)], 0)
    with pytest.raises(TrajectoryError, match=r"\[F-1, H, W, 2\]"):
        build_trajectories(flow[..., 0], (16, 16), [(2, 2)], 0)
    bad = flow.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(TrajectoryError, match="infinite"):
        build_trajectories(bad, (16, 16), [(2, 2)], 0)


def test_sixteen_frames_at_512_build_in_under_a_second():
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(15, 2, 16, 16, generator=g) * 6  # smooth, video-like motion in pixels
    flow = torch.nn.functional.interpolate(coarse, size=(512, 512), mode="bilinear").permute(0, 2, 3, 1)
    # One intra-op thread: on a shared 2-core runner, OpenMP regions with a descheduled second thread
    # cost milliseconds each and the timing would measure the contention, not the builder (which
    # takes ~0.05 s with 2 free cores, ~0.08 s on one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            result = build_trajectories(flow.contiguous(), (512, 512), [(64, 64), (32, 32), (16, 16)], seed=0)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert result[(64, 64)].index.shape == (16 * 64 * 64, 16)
    assert best < 1.0, f"{best:.3f} s"
    invariants(result[(16, 16)])


def test_device_copies_are_made_once_and_deepcopy_keeps_the_object():
    import copy
    traj = build_trajectories(torch.zeros(1, 16, 16, 2), (16, 16), [(2, 2)], seed=0)[(2, 2)]
    assert traj.on("cpu") is traj and copy.deepcopy(traj) is traj
    moved = traj.on("meta")
    assert moved.index.device.type == "meta" and traj.on("meta") is moved and moved.span == traj.span


def test_huge_finite_flow_just_leaves_the_grid():
    flow = torch.full((2, 16, 16, 2), 3e38)
    traj = build_trajectories(flow, (16, 16), [(2, 2)], seed=0)[(2, 2)]
    assert traj.span == 1 and traj.longest == 1
