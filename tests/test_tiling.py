import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distgan.tiling import Layout, RowJoiner, blend_window, iter_rows, join, make_layout, split

SIZES = [(1, 1), (37, 513), (1000, 7), (64, 64), (65, 63), (7, 9)]


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("tile,overlap", [(32, 0), (48, 0), (64, 0), (32, 8), (48, 16), (64, 63)])
def test_round_trip_is_bit_exact(hw, tile, overlap):
    img = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    tiles, layout = split(img, tile, overlap)
    assert tiles.shape == (layout.n_tiles, tile, tile, 3)
    assert np.array_equal(join(tiles, layout), img)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 300), w=st.integers(1, 300), tile=st.sampled_from([32, 48, 64]),
    frac=st.floats(0, 0.95), grey=st.booleans(),
)
def test_round_trip_property(h, w, tile, frac, grey):
    overlap = int(frac * tile)
    shape = (h, w) if grey else (h, w, 3)
    img = np.random.default_rng(h * 1000 + w).random(shape).astype(np.float32)
    tiles, layout = split(img, tile, overlap)
    back = join(tiles, layout)
    assert back.shape == img.shape and np.array_equal(back, img)
    assert np.array_equal(np.concatenate(list(iter_rows(img, tile, overlap))), tiles)


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 20_000), w=st.integers(1, 20_000), tile=st.sampled_from([32, 48, 64]),
       overlap=st.integers(0, 31))
def test_layout_covers_the_image(h, w, tile, overlap):
    lay = Layout(h, w, 3, tile, overlap)
    assert lay.padded_height >= h and lay.padded_width >= w
    # no tile row or column lies wholly in the padding
    assert (lay.rows - 1) * lay.stride < max(h, 1) and (lay.cols - 1) * lay.stride < max(w, 1)
    assert lay.padded_height - h < lay.stride or lay.rows == 1


def test_100_megapixel_layout_without_allocating():
    lay = make_layout((10_000, 10_000, 3), 64, 16)
    assert lay.rows == lay.cols == 208 and lay.n_tiles == 43_264
    assert lay.origins()[-1].tolist() == [207 * 48, 207 * 48]
    # The streaming joiner's working memory is one float32 band of tile rows (for an
    # integer output): ~8 MB here, against 300 MB for the uint8 image and 2.4 GB for a
    # float64 copy. The output is a zero-stride view, so nothing image-sized is allocated.
    out = np.broadcast_to(np.zeros(1, np.uint8), lay.shape)
    j = RowJoiner(lay, out)
    assert j._acc.nbytes < 64 * lay.padded_width * 3 * 4 + 1


def test_streaming_join_on_a_large_image_row_at_a_time():
    h, w = 3000, 2500  # 7.5 MP, done one row of tiles at a time
    img = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    lay = make_layout(img.shape, 64, 16)
    out = np.zeros_like(img)
    joiner = RowJoiner(lay, out)
    assert joiner._acc.nbytes == 64 * lay.padded_width * 3 * 4  # one band, never the image
    n_rows = 0
    for row in iter_rows(img, 64, 16):
        assert row.shape == (lay.cols, 64, 64, 3)
        joiner.add_row(row)
        n_rows += 1
    assert n_rows == lay.rows and joiner.result() is out and np.array_equal(out, img)


def test_blending_hides_seams_of_independently_processed_tiles():
    # Each tile gets its own brightness offset, as if processed independently.
    img = np.full((200, 200, 3), 0.5, np.float32)
    tiles, lay = split(img, 64, 32)
    offsets = np.random.default_rng(2).normal(0, 0.05, (len(tiles), 1, 1, 1)).astype(np.float32)
    blended = join(tiles + offsets, lay)
    # jumps between neighbouring pixels stay small: the window ramps, no step at borders
    max_jump = np.abs(np.diff(blended, axis=1)).max()
    assert max_jump < 0.02
    plain, lay0 = split(img, 64, 0)
    off0 = np.random.default_rng(2).normal(0, 0.05, (len(plain), 1, 1, 1)).astype(np.float32)
    seam = np.abs(np.diff(join(plain + off0, lay0), axis=1)).max()
    assert seam > 5 * max_jump  # without overlap the seams are plain to see


def test_window_is_positive_and_flat_in_the_middle():
    w = blend_window(64, 16)
    assert w.min() > 0 and np.all(w[16:48] == 1) and np.allclose(w[:16], w[::-1][:16])


@pytest.mark.parametrize("bad", [dict(tile=0), dict(overlap=64), dict(overlap=-1)])
def test_bad_layouts_are_refused(bad):
    args = dict(height=10, width=10, channels=3, tile=64, overlap=0) | bad
    with pytest.raises(ValueError):
        Layout(**args)


def test_join_checks_tile_count():
    tiles, lay = split(np.zeros((100, 100, 3)), 32)
    with pytest.raises(ValueError, match="tiles"):
        join(tiles[:-1], lay)
