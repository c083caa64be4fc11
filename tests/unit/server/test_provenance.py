"""tinyimg.provenance: the watermark survives PNG and JPEG at quality 90 and is absent from images
that never got it; parameters and the AI-generated mark round-trip through PNG, JPEG and WebP; the
audit record holds hashes, never the prompt or the key; and ``verify_image`` tells an image made
here (watermark, stored audit record) from a foreign one."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.support.signing import write_signing_key
from tinyimg import imaging
from tinyimg.durable.results import DirResultStore
from tinyimg.provenance import watermark
from tinyimg.provenance.audit import audit_key, build_audit_record, sha256_hex
from tinyimg.provenance.manifest import SigningKeyError, load_signing_key, read_cert_serial, read_manifest
from tinyimg.provenance.metadata import TRAINED_ALGORITHMIC_MEDIA, build_xmp, is_marked_generated, read_parameters
from tinyimg.provenance.pngtext import add_png_text, has_png_text
from tinyimg.provenance.stamp import build_stamp, finish_image
from tinyimg.provenance.support import check_provenance_support
from tinyimg.provenance.verify import verify_image
from tinyimg.spec import ConfigError, ProvenanceSpec, ServerConfig

PAYLOAD = watermark.build_payload("deployment-a")


def photo_like(side: int, seed: int) -> Image.Image:
    """Smooth random structure, as generated images have (pure noise is not what a model makes)."""
    rng = np.random.default_rng(seed)
    noise = Image.fromarray((rng.random((side, side, 3)) * 255).astype("uint8"))
    return noise.filter(ImageFilter.GaussianBlur(2 + seed % 4))


def reopen(image: Image.Image, fmt: str, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("side, seed", [(256, 1), (384, 2), (512, 3), (768, 4), (1024, 5), (256, 6)])
def test_the_watermark_survives_png_and_jpeg_90_and_is_not_seen_where_none_was_put(side, seed):
    original = photo_like(side, seed)
    marked = watermark.embed(original, PAYLOAD)
    assert watermark.read_payload(reopen(marked, "PNG")) == PAYLOAD
    assert watermark.read_payload(reopen(marked, "JPEG", quality=90)) == PAYLOAD
    assert watermark.read_payload(reopen(original, "PNG")) != PAYLOAD
    assert watermark.read_payload(marked) != watermark.build_payload("deployment-b")
    change = np.abs(np.asarray(marked, dtype=int) - np.asarray(original, dtype=int))
    assert change.mean() < 3.0  # invisible: a few levels of 255 on average


def test_images_under_256_pixels_a_side_are_left_unmarked():
    with pytest.raises(watermark.MarkSkipped, match="256"):
        watermark.embed(photo_like(128, 1), PAYLOAD)
    assert watermark.read_payload(photo_like(255, 1)) is None


def test_the_majority_vote_corrects_a_flipped_bit_in_one_copy():
    copies = bytearray(PAYLOAD * watermark.REPEAT)
    copies[1] ^= 0b100  # one bit of the first copy
    copies[4 + 2] ^= 0b1  # another bit of the second copy
    assert watermark._vote(bytes(copies)) == PAYLOAD


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_parameters_and_the_generated_mark_round_trip_in_every_format(fmt):
    parameters = {"model": "m", "seed": 7, "steps": 4, "note": "<&\"> ünï"}
    data = imaging.encode_image(photo_like(64, 1), fmt, parameters=json.dumps(parameters),
                                xmp=build_xmp(parameters, "tinyimg m@abc"))
    info = Image.open(io.BytesIO(data)).info
    assert read_parameters(info) == parameters and is_marked_generated(info)
    plain = Image.open(io.BytesIO(imaging.encode_image(photo_like(64, 1), fmt))).info
    assert read_parameters(plain) is None and not is_marked_generated(plain)
    assert TRAINED_ALGORITHMIC_MEDIA.startswith("http://cv.iptc.org/")


def test_a_stamp_carries_what_the_settings_ask_and_the_prompt_only_when_asked():
    parameters = {"prompt": "secret words", "negative_prompt": None, "steps": 4, "seed": 1}
    assert build_stamp(ProvenanceSpec(), parameters, "m", "r1") is None
    stamp = build_stamp(ProvenanceSpec(parameters=True), parameters, "m", "r1")
    assert stamp is not None and stamp.watermark is None
    assert stamp.parameters == {"steps": 4, "seed": 1, "model": "m", "revision": "r1"}
    with_prompt = build_stamp(ProvenanceSpec(parameters=True, includePrompt=True), parameters, "m", None)
    assert with_prompt is not None and with_prompt.parameters["prompt"] == "secret words"
    data = finish_image(photo_like(256, 3), 42, "png", build_stamp(
        ProvenanceSpec(parameters=True, watermark=True, watermarkText="deployment-a"), parameters, "m", "r1"))
    image = Image.open(io.BytesIO(data))
    assert read_parameters(image.info)["seed"] == 42 and "secret words" not in data.decode("latin-1")
    assert watermark.read_payload(image) == PAYLOAD
    # too small for the watermark: still answered, with its parameters
    small = Image.open(io.BytesIO(finish_image(photo_like(64, 3), 1, "jpeg", build_stamp(
        ProvenanceSpec(parameters=True, watermark=True), parameters, "m", "r1"))))
    assert read_parameters(small.info)["seed"] == 1


def test_the_audit_record_holds_hashes_never_the_prompt_or_the_key():
    images = [b"first image", b"second image"]
    key_hash = sha256_hex(b"sk-the-key")
    record = build_audit_record(job_id="job_1", status="succeeded", model="m", revision="r1", tenant="team-a",
                                key_hash=key_hash, parameters={"prompt": "secret words", "steps": 4},
                                images=images, seeds=[1, 2], finished_at=0.0)
    text = json.dumps(record)
    assert "secret words" not in text and key_hash not in text and "sk-the-key" not in text
    assert record["key_id"] == key_hash[:12] and record["time"] == "1970-01-01T00:00:00.000+00:00"
    assert [i["sha256"] for i in record["images"]] == [sha256_hex(b"first image"), sha256_hex(b"second image")]
    same_prompt_other_steps = build_audit_record(job_id="job_2", status="succeeded", model="m", revision="r1",
                                                 tenant="team-a", key_hash=None, parameters={"prompt": "secret words", "steps": 5},
                                                 images=[], seeds=[])
    assert same_prompt_other_steps["prompt_sha256"] == record["prompt_sha256"]
    assert same_prompt_other_steps["parameters_sha256"] != record["parameters_sha256"]
    assert same_prompt_other_steps["key_id"] is None


def test_png_text_chunks_are_found_by_keyword():
    data = imaging.encode_image(photo_like(32, 1), "png")
    assert not has_png_text(data, "parameters")
    assert has_png_text(add_png_text(data, "parameters", "{}"), "parameters")
    assert not has_png_text(add_png_text(data, "other", "{}"), "parameters")
    assert not has_png_text(b"not a png", "parameters")


def test_verify_tells_an_image_made_here_from_a_foreign_one(tmp_path):
    store = DirResultStore(tmp_path)
    marked = finish_image(photo_like(256, 2), 3, "png", build_stamp(
        ProvenanceSpec(watermark=True, watermarkText="deployment-a"), {"steps": 4}, "m", "r1"))
    record = build_audit_record(job_id="job_9", status="succeeded", model="m", revision="r1", tenant="t", key_hash=None,
                                parameters={"steps": 4}, images=[marked], seeds=[3])
    asyncio.run(store.put(audit_key(record["images"][0]["sha256"]), json.dumps(record).encode(), "application/json", {}))
    mine = asyncio.run(verify_image(marked, ["deployment-a"], store))
    assert mine["made_here"] and mine["job_id"] == "job_9" and mine["watermark"]["matches"]
    # re-encoded as JPEG: the hash no longer matches, the watermark still does
    jpeg = imaging.encode_image(Image.open(io.BytesIO(marked)), "jpeg")
    moved = asyncio.run(verify_image(jpeg, ["deployment-a"], store))
    assert moved["made_here"] and moved["job_id"] is None and moved["watermark"]["matches"]
    foreign = asyncio.run(verify_image(imaging.encode_image(photo_like(256, 8), "png"), ["deployment-a"], store))
    assert not foreign["made_here"] and not foreign["watermark"]["matches"] and foreign["audit_record"] is None


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_a_c2pa_manifest_is_signed_into_the_image_and_read_back(tmp_path, fmt):
    cert, key = write_signing_key(tmp_path)
    signing = load_signing_key(str(cert), str(key))
    assert signing.algorithm == "es256"
    stamp = build_stamp(ProvenanceSpec(c2pa=True, parameters=True), {"steps": 4}, "m", "r1", signing)
    data = finish_image(photo_like(96, 1), 5, fmt, stamp)
    media_type = imaging.media_type(fmt)
    manifest = read_manifest(data, media_type)
    assert manifest is not None and manifest["validation_state"] == "Valid"
    assert manifest["issues"] == ["signingCredential.untrusted"]  # our own test CA: known to nobody
    assert manifest["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA and manifest["software_agent"] == "tinyimg m@r1"
    assert manifest["cert_serial_number"] == read_cert_serial(cert.read_bytes())
    assert read_parameters(Image.open(io.BytesIO(data)).info)["seed"] == 5  # the metadata survives signing
    # one byte of the image data changed (near the end: past the manifest in all three formats)
    tampered = bytearray(data)
    tampered[len(data) - 20] ^= 0xFF
    broken = read_manifest(bytes(tampered), media_type)
    assert broken is None or broken["validation_state"] == "Invalid"
    assert read_manifest(imaging.encode_image(photo_like(96, 1), fmt), media_type) is None


def test_verify_trusts_a_valid_manifest_signed_with_this_deployments_certificate(tmp_path):
    cert, key = write_signing_key(tmp_path / "ours")
    other_cert, other_key = write_signing_key(tmp_path / "theirs")
    ours = finish_image(photo_like(96, 2), 1, "png", build_stamp(
        ProvenanceSpec(c2pa=True), {}, "m", "r1", load_signing_key(str(cert), str(key))))
    theirs = finish_image(photo_like(96, 2), 1, "png", build_stamp(
        ProvenanceSpec(c2pa=True), {}, "m", "r1", load_signing_key(str(other_cert), str(other_key))))
    serial = read_cert_serial(cert.read_bytes())
    mine = asyncio.run(verify_image(ours, [], None, serial))
    assert mine["made_here"] and mine["c2pa"]["signed_here"]
    foreign = asyncio.run(verify_image(theirs, [], None, serial))
    assert not foreign["made_here"] and foreign["c2pa"] is not None and not foreign["c2pa"]["signed_here"]


def test_unusable_signing_keys_are_refused_naming_the_setting(tmp_path):
    cert, _ = write_signing_key(tmp_path)
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(SigningKeyError, match="c2paKeyFile"):
        load_signing_key(str(cert), str(tmp_path / "bad.key"))
    with pytest.raises(SigningKeyError, match="c2paCertFile"):
        load_signing_key(str(tmp_path / "missing.crt"), str(tmp_path / "bad.key"))
    with pytest.raises(ValueError, match="c2paCertFile"):
        ServerConfig.model_validate({"models": [{"name": "m", "family": "flux", "source": "/m",
                                                 "provenance": {"c2pa": True}}]})


def test_a_model_whose_provenance_needs_a_missing_library_is_refused_at_start(monkeypatch):
    import importlib.util

    config = ServerConfig.model_validate({"models": [{"name": "m", "family": "flux", "source": "/m",
                                                      "provenance": {"watermark": True}}]})
    check_provenance_support(config)  # installed here
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "imwatermark" else real(name, *a))
    with pytest.raises(ConfigError, match=r"provenance\.watermark needs the 'imwatermark' module"):
        check_provenance_support(config)


def test_c2pa_turned_on_while_running_without_a_loaded_key_is_refused_not_served_unsigned(tmp_path):
    cert, key = write_signing_key(tmp_path)
    config = ServerConfig.model_validate({"c2paCertFile": str(cert), "c2paKeyFile": str(key), "models": [
        {"name": "m", "family": "flux", "source": "/m", "provenance": {"c2pa": True}}]})
    check_provenance_support(config, signing_loaded=True)
    with pytest.raises(ConfigError, match="restart the server"):
        check_provenance_support(config, signing_loaded=False)
