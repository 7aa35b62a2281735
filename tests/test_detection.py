"""Detection: the Swin Mask R-CNN against torchvision's own, COCO targets against pycocotools' decoding, bad
annotations, COCO AP against COCOeval by hand, and the mmdet / torchvision checkpoint layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection import maskrcnn_resnet50_fpn

from swinkit.checkpoints import load_checkpoint, save_checkpoint
from swinkit.checkpoints.io import read_file
from swinkit.core.errors import CheckpointError
from swinkit.data.coco import AnnotationError, CocoDetection, rle_counts, write_coco
from swinkit.data.detection import DetectionPipeline, DetectionSamples, detection_loader
from swinkit.data.digit_scenes import DigitSceneInstances
from swinkit.engine.coco_eval import STAT_NAMES, evaluate_detection
from swinkit.engine.config import load_config
from swinkit.engine.objectives import Detection, batch_seed, seeded
from swinkit.engine.setup import build_model
from swinkit.models import create_model
from swinkit.tools.peers import perturb_parameters

TINY_DETECTOR = ("seg.scenes=16", "seg.val_scenes=6", "model.embed_dim=16", "head.fpn_channels=32",
                 "head.representation_size=64", "head.mask_channels=16")  # fmt: skip


class _Session:
    device, precision = torch.device("cpu"), "fp32"


def tiny_detector(*overrides: str) -> torch.nn.Module:
    cfg = load_config("maskrcnn_digits", [*TINY_DETECTOR, *overrides])
    torch.manual_seed(0)
    model = build_model(cfg, 10)
    perturb_parameters(model, seed=1)
    return model


def test_the_registered_model_is_the_official_swin_t_mask_rcnn():
    model = create_model("maskrcnn_swin_tiny_patch4_window7", num_classes=80)
    assert model.num_classes == 80 and model.roi_heads.box_predictor.cls_score.out_features == 81
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 81
    assert 47.5e6 < sum(p.numel() for p in model.parameters()) < 48.1e6  # the official release's 48M
    assert [tuple(s) for s in model.rpn.anchor_generator.sizes] == [(32,), (64,), (128,), (256,), (512,)]
    model.eval()
    with torch.no_grad():
        maps = model.backbone(torch.zeros(1, 3, 128, 192))
    assert [tuple(m.shape[-2:]) for m in maps.values()] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert list(maps) == ["0", "1", "2", "3", "pool"]


def test_the_objective_loss_is_torchvisions_mask_rcnn_on_the_pipelines_targets(tmp_path):
    # A COCO folder whose annotations use polygons, compressed and uncompressed RLE and a crowd region, through the
    # training pipeline (multi-scale resize, the crop policy, flip), as a run reads it.
    cfg = load_config("maskrcnn_digits", list(TINY_DETECTOR))
    model = tiny_detector()
    _scene_folder(tmp_path)
    data = CocoDetection(tmp_path, "val")
    pipeline = DetectionPipeline(train=True, shorter_sides=(96, 128), crop_policy=True, crop_shorter_sides=(64,),
                                 crop_size=(48, 64))  # fmt: skip
    images, targets, bad = next(iter(detection_loader(data, pipeline, batch_size=2, train=True, seed=3)))
    assert not bad and all("seed" in t for t in targets)
    objective = Detection(cfg, _Session(), model, None, None, data.classes, data.category_ids)
    model.train()
    ours = objective.loss(model, images, targets, 0)
    m = model
    reference = TorchvisionMaskRCNN(
        m.backbone, num_classes=None, min_size=m.transform.min_size, max_size=m.transform.max_size,
        image_mean=m.transform.image_mean, image_std=m.transform.image_std, rpn_anchor_generator=m.rpn.anchor_generator,
        rpn_head=m.rpn.head, rpn_post_nms_top_n_train=1000, box_head=m.roi_heads.box_head,
        box_predictor=m.roi_heads.box_predictor, box_batch_size_per_image=cfg.head.box_batch_size_per_image,
        mask_head=m.roi_heads.mask_head, mask_predictor=m.roi_heads.mask_predictor, _skip_resize=True,
    ).train()  # fmt: skip
    plain = [{k: t[k] for k in ("boxes", "labels", "masks")} for t in targets]
    with seeded(batch_seed([t["seed"] for t in targets]), torch.device("cpu")):
        losses = reference(images, plain)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    torch.testing.assert_close(ours, sum(losses.values()), rtol=0, atol=0)
    assert ours.item() > 0


@pytest.mark.parametrize("pipeline, pixels", [
    (DetectionPipeline(train=True, shorter_sides=(96, 160), crop_policy=False, flip=1.0), 2.0),
    (DetectionPipeline(train=True, shorter_sides=(128,), crop_policy=True, crop_shorter_sides=(80,),
                       crop_size=(40, 56), flip=0.0), 4.0),
    (DetectionPipeline(train=True, lsj=True, lsj_size=96, lsj_range=(0.5, 2.0), flip=0.5), 2.0),
], ids=["resize-flip", "crop-policy", "lsj"])  # fmt: skip
def test_the_training_pipeline_moves_boxes_with_their_masks(pipeline, pixels):
    # A digit's box is its mask's extent; after every transform each kept box still holds its mask, to the
    # nearest-neighbour rounding of the resizes (the crop policy's first resize shrinks the scene, and its rounding is
    # enlarged up to 2.7x by the second), and a box left without area went with its mask. Without a crop the box is
    # still the mask's extent; a crop clips the box, as mmdet's does, and a digit's ink need not reach the cut.
    data = DigitSceneInstances("train", 12)
    for i in range(len(data)):
        x, target, message = DetectionSamples(data, pipeline)[(i, 1000 + i)]
        assert not message and x.shape[0] == 3 and x.min() >= 0 and x.max() <= 1
        masks, boxes = target["masks"], target["boxes"]
        assert masks.shape == (len(boxes), *x.shape[1:]) and len(target["labels"]) == len(boxes)
        if pipeline.lsj:
            assert max(x.shape[1:]) <= 96
        for box, mask in zip(boxes, masks, strict=True):
            rows, cols = mask.nonzero(as_tuple=True)
            if not len(rows):  # a sliver the resize rounded away
                continue
            extent = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
            inside = torch.cat([extent[:2] - box[:2], box[2:] - extent[2:]])
            assert inside.min() >= -pixels, (box, extent)
            if not (pipeline.lsj or pipeline.crop_policy):
                assert (box - extent).abs().max() <= pixels, (box, extent)


def _scene_folder(root: Path) -> Path:
    """A COCO folder of 3 digit scenes whose annotations use every mask form: polygons, compressed RLE, uncompressed
    RLE, and a crowd region."""
    file = write_coco(root, "val", DigitSceneInstances("val", 3))
    data = json.loads(file.read_text())
    anns = data["annotations"]
    square = [[10.0, 10.0, 30.0, 10.0, 30.0, 25.0, 10.0, 25.0], [40.0, 40.0, 50.0, 45.0, 42.0, 55.0]]
    anns[0]["segmentation"] = square
    compressed = anns[1]["segmentation"]
    plain = coco_mask.decode({"size": compressed["size"], "counts": compressed["counts"].encode("ascii")})
    runs, value, count = [], 0, 0
    for pixel in np.asfortranarray(plain).ravel(order="F"):
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    anns[1]["segmentation"] = {"size": [64, 64], "counts": [*runs, count]}  # uncompressed RLE
    anns.append({**anns[2], "id": 999, "iscrowd": 1})
    file.write_text(json.dumps(data))
    return file


def test_targets_are_pycocotools_decoding_of_polygons_and_rle(tmp_path):
    file = _scene_folder(tmp_path)
    dataset = CocoDetection(tmp_path, "val")
    coco = COCO(str(file))
    assert not dataset.skipped
    for i in range(len(dataset)):
        picture, target = dataset.load(i)
        image_id = target["image_id"]
        anns = [a for a in coco.imgToAnns[image_id] if not a["iscrowd"]]
        assert len(target["boxes"]) == len(anns) > 0
        for k, ann in enumerate(anns):
            x, y, w, h = ann["bbox"]
            assert target["boxes"][k].tolist() == [x, y, x + w, y + h]
            assert target["labels"][k] == dataset.category_ids.index(ann["category_id"]) + 1
            assert np.array_equal(target["masks"][k].numpy(), coco.annToMask(ann))
        image, moved = DetectionPipeline(train=False)((picture, target))
        assert image.shape == (3, 64, 64) and image.min() >= 0 and image.max() <= 1
        assert torch.equal(moved["masks"], target["masks"])
    crowd = [a for i in range(len(dataset)) for a in dataset.record(i)[1] if a["iscrowd"]]
    assert len(crowd) == 1  # kept for evaluation, left out of training


def test_compressed_rle_counts_are_read_as_pycocotools_writes_them():
    rng = np.random.default_rng(0)
    plane = np.asfortranarray((rng.random((37, 23)) > 0.6).astype(np.uint8))
    rle = coco_mask.encode(plane)
    counts = rle_counts(rle["counts"].decode("ascii"))
    assert sum(counts) == 37 * 23
    flat = np.concatenate([np.full(c, i % 2, dtype=np.uint8) for i, c in enumerate(counts)])
    assert np.array_equal(flat.reshape(23, 37).T, plane)


def _edited(tmp_path: Path, edit) -> Path:
    file = write_coco(tmp_path, "val", DigitSceneInstances("val", 2))
    data = json.loads(file.read_text())
    edit(data)
    file.write_text(json.dumps(data))
    return file


SKIPPED = [
    (lambda d: d["annotations"][0].update(bbox=[70, 3, 10, 10]), "lies outside its 64x64 image"),
    (lambda d: d["annotations"][0].update(bbox=[5, 3, 0, 10]), "zero or negative width"),
    (lambda d: d["annotations"][0].update(category_id=77), "category_id 77 is not in 'categories'"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]), "a polygon needs at least 3"),
    (lambda d: d["annotations"][0]["segmentation"].update(size=[32, 32]), "RLE of size [32, 32] on an image of 64x64"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts="0?"), "RLE counts"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5, 1e9, 3]]), "reaches far outside"),
    (lambda d: d["annotations"][0].update(category_id=[1]), "category_id [1] is not in"),
]  # fmt: skip


@pytest.mark.parametrize("edit, message", SKIPPED)
def test_an_annotation_that_cannot_be_trained_on_is_skipped_counted_and_named(tmp_path, edit, message, caplog):
    _edited(tmp_path, edit)
    dataset = CocoDetection(tmp_path, "val")
    assert len(dataset.skipped) == 1 and message in dataset.skipped[0]
    assert "instances_val.json: annotation 1 (image 0)" in dataset.skipped[0]
    assert "skipped 1 annotation(s)" in caplog.text
    _, target = dataset.load(0)
    assert len(target["boxes"]) == len(dataset.record(0)[1]) == 2  # the other two digits train


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["images"].append(dict(d["images"][0])), "image id 0 appears twice"),
    (lambda d: d["annotations"][0].update(image_id=5), "its image_id is not an id of 'images'"),
    (lambda d: d.pop("categories"), "no 'categories' list"),
])  # fmt: skip
def test_an_annotation_file_that_cannot_be_used_is_one_error(tmp_path, edit, message):
    _edited(tmp_path, edit)
    with pytest.raises(AnnotationError, match=message):
        CocoDetection(tmp_path, "val")


def test_a_file_that_is_not_json_and_a_missing_image(tmp_path):
    file = _edited(tmp_path, lambda d: None)
    (tmp_path / "val" / "val-000001.png").unlink()
    samples = detection_loader(CocoDetection(tmp_path, "val"), DetectionPipeline(train=False), batch_size=2,
                               train=False)  # fmt: skip
    images, targets, bad = next(iter(samples))
    assert len(images) == 1 and len(bad) == 1 and "val-000001.png" in bad[0]  # skipped and counted by the loop
    file.write_bytes(b"\x89PNG not json")
    with pytest.raises(AnnotationError, match="not a JSON annotation file"):
        CocoDetection(tmp_path, "val")


class _Replay(torch.nn.Module):
    """A 'detector' that returns given detections per image (by image size order), for scoring against COCOeval."""

    def __init__(self, outputs: list[dict]) -> None:
        super().__init__()
        self.outputs, self.calls = outputs, 0
        self.roi_heads = type("Heads", (), {"has_mask": staticmethod(lambda: True)})()

    def forward(self, images):
        out = self.outputs[self.calls : self.calls + len(images)]
        self.calls += len(images)
        return out


def test_coco_ap_equals_cocoeval_run_by_hand(tmp_path):
    dataset = DigitSceneInstances("val", 12)
    file = write_coco(tmp_path, "val", dataset)
    rng = np.random.default_rng(0)
    outputs = []
    for i in range(len(dataset)):  # each object found with a jittered box, a right or wrong class, a mask
        _, target = dataset.load(i)
        n = len(target["boxes"])
        boxes = target["boxes"] + torch.from_numpy(rng.normal(0, 2, (n, 4))).float()
        labels = torch.where(torch.from_numpy(rng.random(n) < 0.8), target["labels"], (target["labels"] % 10) + 1)
        masks = target["masks"][:, None].float() * 0.9
        outputs.append({"boxes": boxes, "labels": labels, "scores": torch.from_numpy(rng.random(n)).float(),
                        "masks": masks})  # fmt: skip
    loader = detection_loader(dataset, DetectionPipeline(train=False), batch_size=2, train=False)
    result = evaluate_detection(_Replay(outputs), loader, torch.device("cpu"), "fp32", dataset.classes,
                                dataset.category_ids)  # fmt: skip
    gt = COCO(str(file))
    for kind in ("bbox", "segm"):
        by_hand = COCOeval(gt, gt.loadRes([dict(d) for d in result["detections"][kind]]), kind)
        by_hand.evaluate()
        by_hand.accumulate()
        by_hand.summarize()
        ours = [result[kind]["stats"][name] for name in STAT_NAMES]
        assert ours == [float(v * 100) if v >= 0 else -1.0 for v in by_hand.stats]
        assert 20 < result[kind]["stats"]["AP"] < 100
    assert result["n"] == 12 and len(result["bbox"]["per_class"]) == 10


def test_mmdet_layout_is_written_and_read_back_with_a_report(tmp_path):
    model = tiny_detector().eval()
    path = save_checkpoint(model, tmp_path / "mask_rcnn_swin.pth", format="mmdet")
    state = read_file(path)[0]["state_dict"]
    for key in ("backbone.patch_embed.proj.weight", "backbone.layers.0.blocks.0.attn.relative_position_bias_table",
                "backbone.norm3.weight", "neck.lateral_convs.0.conv.weight", "neck.fpn_convs.3.conv.weight",
                "rpn_head.rpn_conv.weight", "rpn_head.rpn_cls.weight", "rpn_head.rpn_reg.weight",
                "roi_head.bbox_head.shared_fcs.1.weight", "roi_head.mask_head.convs.3.conv.weight",
                "roi_head.mask_head.upsample.weight"):  # fmt: skip
        assert key in state, key
    cls = model.roi_heads.box_predictor.cls_score.weight
    assert torch.equal(state["roi_head.bbox_head.fc_cls.weight"][-1], cls[0])  # mmdet's background is last
    assert state["roi_head.bbox_head.fc_reg.weight"].shape[0] == 40  # no background rows
    assert state["roi_head.mask_head.conv_logits.weight"].shape[0] == 10
    state["roi_head.mask_iou_head.fc_mask_iou.weight"] = torch.zeros(1)  # a head torchvision has no module for
    fresh = tiny_detector()
    report = load_checkpoint(fresh, {"state_dict": state})  # strict: every tensor of the model found
    assert report.format == "mmdet" and any("background moved first" in note for note in report.adapted)
    assert "roi_head.mask_iou_head.fc_mask_iou.weight" in report.dropped
    image = [torch.rand(3, 64, 80)]
    with torch.no_grad():
        expected, got = model(image), fresh.eval()(image)
    assert len(expected[0]["boxes"]) > 0
    for key in expected[0]:
        torch.testing.assert_close(got[0][key], expected[0][key], rtol=0, atol=0)


def test_torchvision_mask_rcnn_heads_load_and_the_resnet_is_reported(tmp_path):
    torch.manual_seed(0)
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=11)
    path = tmp_path / "maskrcnn_resnet50_fpn.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("maskrcnn_swin_tiny_patch4_window7", num_classes=10)
    with pytest.raises(CheckpointError, match="strict=False"):
        load_checkpoint(model, path)
    report = load_checkpoint(model, path, strict=False)
    assert report.format == "torchvision"
    ours = model.state_dict()
    for key in ("rpn.head.conv.0.0.weight", "roi_heads.box_head.fc6.weight", "roi_heads.mask_head.3.0.weight",
                "roi_heads.box_predictor.cls_score.weight", "backbone.fpn.layer_blocks.2.0.weight"):  # fmt: skip
        assert torch.equal(ours[key], reference.state_dict()[key]) and key in report.loaded
    assert "backbone.fpn.inner_blocks.3.0.weight" in report.dropped  # 2048 ResNet channels, not 768
    assert any("another backbone" in note for note in report.adapted)
    written = save_checkpoint(model, tmp_path / "swin.pth", format="torchvision")
    again = create_model("maskrcnn_swin_tiny_patch4_window7", num_classes=10)
    load_checkpoint(again, written)  # strict: every tensor, torchvision's names
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.items())


def test_a_simmim_checkpoint_starts_a_detectors_backbone(tmp_path):
    from swinkit.ssl import build_simmim

    arch = dict(img_size=32, patch_size=4, window_size=2, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
    torch.manual_seed(0)
    simmim = perturb_parameters(build_simmim("swin_tiny_patch4_window7_224", backbone_kwargs=dict(arch),
                                             mask_patch_size=8), seed=2)  # fmt: skip
    torch.save({"model": simmim.state_dict(), "epoch": 99}, tmp_path / "simmim.pth")
    detector = create_model("maskrcnn_swin_tiny_patch4_window7", num_classes=3, img_size=32, fpn_channels=8,
                            representation_size=16, mask_channels=8,
                            backbone_args={k: v for k, v in arch.items() if k != "img_size"})  # fmt: skip
    report = load_checkpoint(detector, tmp_path / "simmim.pth")
    assert "simmim encoder" in report.source.lower() and "mask_token" in " ".join(report.dropped)
    body = detector.backbone.body.state_dict()
    encoder = {k: v for k, v in simmim.encoder.state_dict().items() if k in body and "relative_position_index" not in k}
    assert len(encoder) > 20 and all(torch.equal(body[k], v) for k, v in encoder.items())
