"""A damaged chunk of an input zarr array is named, with its file (issue 17).

The arrays are written in ``tmp_path``, one chunk file's bytes are overwritten, and
``tiledseg predict`` and ``tiledseg train`` run through :func:`tiledseg.cli.main`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from tiledseg.cli import main
from tiledseg.damaged_chunks import DamagedChunkError
from tiledseg.errors import InputDataError
from tiledseg.runs import done_blocks
from tiledseg.testing import make_phantom
from tiledseg.volume import open_volume

SHAPE = (96, 96)
CHUNK = 16  # 6 x 6 chunks, and blocks of the same size
DAMAGED = (5, 4)  # the chunk overwritten: blocks (4..5, 3..5) read it with their halo

#: zarr format and chunk key encoding: v3's default "c/5/4", v2's "5.4" and "5/4"
LAYOUTS = {
    "v3": ({"zarr_format": 3}, "c/5/4"),
    "v2": ({"zarr_format": 2}, "5.4"),
    "v2-slash": (
        {"zarr_format": 2, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
        "5/4",
    ),
}


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, n_classes=3, feature_size=8.0, scribble_fraction=0.05, seed=3)


def write_array(path: Path, data: np.ndarray, **kwargs) -> zarr.Array:
    array = zarr.create_array(str(path), shape=data.shape, dtype=data.dtype, **kwargs)
    array[...] = data
    return array


def damage(chunk_file: Path) -> None:
    """Overwrite a stored chunk with bytes its codec cannot decode."""
    assert chunk_file.is_file(), chunk_file
    chunk_file.write_bytes(b"\x00garbage" * 7)


def run(capsys, args: list[object]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_predict_names_the_damaged_chunk_and_writes_the_other_blocks(
    tmp_path, capsys, phantom, model_file, layout
):
    kwargs, key = LAYOUTS[layout]
    image = tmp_path / "in.zarr"
    write_array(image, phantom.image, chunks=(CHUNK, CHUNK), **kwargs)
    damage(image / key)
    out = tmp_path / "out.zarr"
    args = ["predict", image, "--model", model_file, "--out", out, "--block", CHUNK, "--quiet"]
    code, lines = run(capsys, args)
    assert code == 1
    assert lines[0].startswith("tiledseg: error: 6 of 36 blocks failed")
    failed = lines[1:]
    assert len(failed) == 6  # the chunk's block and its neighbours, whose halo reaches it
    expected = f"cannot read chunk {key} (file {image / key}) of array {image}: RuntimeError: "
    assert all(expected in line for line in failed), failed
    assert all("the store may be damaged there: rewrite that chunk" in line for line in failed)
    assert len(done_blocks(out)) == 30
    labels = zarr.open_group(str(out), mode="r")["labels/0"][...]
    assert labels[:64].all()  # the blocks that do not reach the chunk are written


def test_train_names_the_damaged_chunk(tmp_path, capsys, phantom):
    image = tmp_path / "in.zarr"
    write_array(image, phantom.image, chunks=(CHUNK, CHUNK))
    np.save(tmp_path / "scribbles.npy", phantom.scribbles)
    # the chunk holding the first scribble: training has to read it
    y, x = np.argwhere(phantom.scribbles)[0] // CHUNK
    damage(image / "c" / str(y) / str(x))
    model = tmp_path / "m.tseg"
    args = ["train", image, tmp_path / "scribbles.npy", "--model", model, "--quiet", "--no-cache"]
    code, lines = run(capsys, [*args, "--features", "minimal"])
    assert code == 2
    assert len(lines) == 1
    assert f"(file {image / 'c' / str(y) / str(x)}) of array {image}" in lines[0]
    assert not model.exists()


def test_an_ome_zarr_level_names_its_own_chunk(tmp_path, capsys, phantom, model_file):
    path = tmp_path / "img.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    levels = [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [2**i] * 2}]}
        for i in range(2)
    ]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": levels}]}
    for i, data in enumerate([phantom.image, phantom.image[::2, ::2]]):
        root.create_array(str(i), shape=data.shape, dtype=data.dtype, chunks=(CHUNK, CHUNK))
        root[str(i)][...] = data
    damage(path / "0" / "c" / "5" / "4")
    damage(path / "1" / "c" / "0" / "1")
    out = tmp_path / "out.zarr"
    args = ["predict", path, "--model", model_file, "--out", out, "--block", CHUNK, "--quiet"]
    code, lines = run(capsys, args)
    assert code == 1
    assert (
        f"cannot read chunk c/5/4 (file {path / '0' / 'c/5/4'}) of array {path / '0'}" in lines[1]
    )
    level1 = open_volume(str(path), level=1)
    np.testing.assert_array_equal(
        level1.read((slice(0, 16), slice(0, 16)))[0], phantom.image[:32:2, :32:2]
    )
    with pytest.raises(DamagedChunkError, match=f"chunk c/0/1 \\(file {path / '1' / 'c/0/1'}\\)"):
        level1.read((slice(0, 20), slice(10, 20)))


def test_several_damaged_chunks_are_named_and_counted(tmp_path, phantom):
    image = tmp_path / "in.zarr"
    write_array(image, phantom.image, chunks=(CHUNK, CHUNK))
    for y in range(5):
        damage(image / "c" / str(y) / "0")
    volume = open_volume(str(image))
    with pytest.raises(InputDataError) as error:
        volume.read((slice(0, 96), slice(0, 20)))
    message = str(error.value)
    assert message.startswith(f"cannot read chunks c/0/0 (file {image}/c/0/0), c/1/0 (file ")
    assert "c/2/0 (file" in message
    assert "and 2 more of array" in message
    assert "rewrite those chunks or the array" in message
    # a region away from the damaged chunks reads as stored
    np.testing.assert_array_equal(
        volume.read((slice(0, 96), slice(16, 96)))[0], phantom.image[:, 16:]
    )


def test_a_damaged_shard_is_named_by_its_file(tmp_path, phantom):
    image = tmp_path / "in.zarr"
    write_array(image, phantom.image, chunks=(8, 8), shards=(32, 32))
    shard = image / "c" / "1" / "2"
    data = bytearray(shard.read_bytes())
    data[:16] = b"\xff" * 16  # the first inner chunk's bytes
    shard.write_bytes(bytes(data))
    volume = open_volume(str(image))
    with pytest.raises(DamagedChunkError, match=f"chunk c/1/2 \\(file {shard}\\) of array {image}"):
        volume.read((slice(30, 40), slice(60, 70)))


def test_a_good_read_of_a_region_is_the_stored_values(tmp_path, phantom):
    image = tmp_path / "in.zarr"
    write_array(image, phantom.image, chunks=(CHUNK, CHUNK), zarr_format=2)
    volume = open_volume(str(image))
    np.testing.assert_array_equal(
        volume.read((slice(5, 50), slice(7, 90)))[0], phantom.image[5:50, 7:90]
    )
