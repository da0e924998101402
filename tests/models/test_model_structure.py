"""ResNet / WRN structure: parameter counts, weighted depth, strides, shortcuts."""

import keras
import pytest

from tfcompress import models


def _convs(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]


def test_resnet20_parameter_count_on_32x32x3():
    model = models.resnet(depth=20, width=16, input_shape=(32, 32, 3))
    # By hand (n = 3 blocks per stage; BN has 4·C weights: gamma, beta, mean, var):
    #   stem conv 3·3·3·16                         =    432
    #   stage1 convs 6 · 3·3·16·16                 = 13,824
    #   stage2 convs 3·3·16·32 + 5 · 3·3·32·32     = 50,688
    #   stage3 convs 3·3·32·64 + 5 · 3·3·64·64     = 202,752
    #   BN after stem + block convs 4·(16+6·16+6·32+6·64) = 2,752
    #   head 64·10 + 10                            =    650
    #   → option A (zero-pad shortcuts): 271,098 (269,722 trainable: the
    #     "0.27M" of He et al. 2016, table 6)
    #   1×1 projections: 16·32 + 32·64 = 2,560 conv + 4·(32+64) = 384 BN
    #   → 274,042 in all, 272,474 trainable.
    assert model.count_params() == 432 + 13824 + 50688 + 202752 + 2752 + 650 + 2560 + 384
    assert model.count_params() == 274042
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    assert trainable == 272474


@pytest.mark.parametrize("depth", [8, 32])
def test_resnet_has_depth_weighted_layers(depth):
    model = models.resnet(depth=depth, width=4)
    main_convs = [c for c in _convs(model) if "proj" not in c.name]
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert len(main_convs) + len(dense) == depth
    assert [c.name for c in _convs(model) if "proj" in c.name] == [
        "stage2_block1_proj_conv",
        "stage3_block1_proj_conv",
    ]
    n = (depth - 2) // 6
    assert model.get_layer(f"stage3_block{n}_conv2").name.startswith("stage3")
    # Convolutions followed by BN carry no bias.
    assert all(not c.use_bias for c in _convs(model))


def test_resnet_stages_widths_and_strides_on_28x28():
    model = models.resnet(depth=8, width=16, input_shape=(28, 28, 1))
    assert model.get_layer("stage1_block1_out").output.shape == (None, 28, 28, 16)
    assert model.get_layer("stage2_block1_conv1").strides == (2, 2)
    assert model.get_layer("stage2_block1_out").output.shape == (None, 14, 14, 32)
    assert model.get_layer("stage3_block1_out").output.shape == (None, 7, 7, 64)
    assert model.get_layer("stage3_block1_proj_conv").kernel_size == (1, 1)
    assert isinstance(model.get_layer("pool"), keras.layers.GlobalAveragePooling2D)
    assert model.get_layer("head").kernel.shape == (64, 10)


def test_wrn16_4_parameter_count_and_widths():
    model = models.wide_resnet(depth=16, k=4, input_shape=(32, 32, 3))
    # By hand (n = 2 blocks per group; widths 64, 128, 256; BN = 4·C):
    #   stem 3·3·3·16                                              =       432
    #   group1: bn(16) 64 + proj 16·64 + conv 9·16·64 + bn 256 + conv 9·64·64
    #           + block2 (256 + 36,864 + 256 + 36,864)              =   121,664
    #   group2: 256 + 64·128 + 9·64·128 + 512 + 9·128·128 + (512 + 147,456)·2
    #                                                               =   526,080
    #   group3: 512 + 128·256 + 9·128·256 + 1,024 + 9·256·256 + (1,024 + 589,824)·2
    #                                                               = 2,100,736
    #   final bn 1,024; head 256·10 + 10 = 2,570                    → 2,752,506
    #   (the "2.7M" of Zagoruyko & Komodakis 2016, table 4)
    assert model.count_params() == 432 + 121664 + 526080 + 2100736 + 1024 + 2570
    assert model.get_layer("stage1_block2_conv2").filters == 64
    assert model.get_layer("stage3_block1_conv1").strides == (2, 2)
    assert model.get_layer("stage3_block2_out").output.shape == (None, 8, 8, 256)
    # WRN-16-4 widens stage 1 (16 → 64), so it has three projections.
    assert [c.name for c in _convs(model) if "proj" in c.name] == [
        "stage1_block1_proj_conv",
        "stage2_block1_proj_conv",
        "stage3_block1_proj_conv",
    ]


def test_wrn_k1_stage1_uses_identity_and_dropout_is_optional():
    model = models.wide_resnet(depth=16, k=1)
    names = [l.name for l in model.layers]
    assert "stage1_block1_proj_conv" not in names
    assert not any("dropout" in n for n in names)
    with_dropout = models.wide_resnet(depth=16, k=1, dropout=0.3)
    assert with_dropout.get_layer("stage2_block2_dropout").rate == 0.3
    assert with_dropout.count_params() == model.count_params()


@pytest.mark.parametrize(
    "name, layer, attr, value",
    [
        ("resnet14", "stage3_block2_conv2", "filters", 64),
        ("wrn16_2", "stage1_block1_conv1", "filters", 32),
        ("vgg13", "block1_conv2", "filters", 64),
    ],
)
def test_build_by_name(name, layer, attr, value):
    model = models.build(name)
    assert model.name == name
    assert getattr(model.get_layer(layer), attr) == value


def test_build_forwards_kwargs_and_lists_names():
    model = models.build("resnet8", width=4, input_shape=(32, 32, 3), num_classes=5)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 5)
    assert models.build("resnet8", depth=8).name == "resnet8"  # same value is fine
    assert models.build("vgg", config=[8, "M"]).get_layer("block1_conv1").filters == 8
    names = models.available_models()
    for expected in ("mlp", "small_cnn", "resnet8", "resnet20", "resnet56", "wrn16_4", "vgg11"):
        assert expected in names


def test_copy_weights_to_twin_rejects_mismatched_models():
    small = models.resnet(depth=8, width=4)
    with pytest.raises(ValueError, match="stem_conv"):
        models.copy_weights_to_twin(small, models.resnet(depth=8, width=8))
    with pytest.raises(ValueError, match="lacks"):
        models.copy_weights_to_twin(small, models.resnet(depth=14, width=4))
    with pytest.raises(ValueError, match="no layer named"):
        models.copy_weights_to_twin(small, models.mlp())
