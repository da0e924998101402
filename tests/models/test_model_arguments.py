"""Bad arguments fail with a ValueError naming the argument and the value."""

import pytest

from tfcompress import models


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: models.resnet(depth=10), r"depth must be 6n\+2 .*received: depth=10"),
        (lambda: models.resnet(depth=2), r"depth.*received: depth=2"),
        (lambda: models.resnet(depth="20"), r"received: depth='20'"),
        (lambda: models.resnet(depth=20.0), r"received: depth=20.0"),
        (lambda: models.resnet(width=0), r"width.*received: width=0"),
        (lambda: models.resnet(input_shape=(28, 28)), r"input_shape.*received"),
        (lambda: models.resnet(num_classes=0), r"num_classes.*received: num_classes=0"),
        (lambda: models.wide_resnet(depth=20), r"depth must be 6n\+4 .*received: depth=20"),
        (lambda: models.wide_resnet(k=0), r"received: k=0"),
        (lambda: models.wide_resnet(dropout=1.0), r"dropout.*received: dropout=1.0"),
        (lambda: models.wide_resnet(dropout=-0.1), r"dropout.*received"),
        (lambda: models.vgg("vgg12"), r"config.*received: config='vgg12'"),
        (lambda: models.vgg([]), r"config.*received: config=\[\]"),
        (lambda: models.vgg(["M"]), r"config.*received"),
        (lambda: models.vgg([8, "X"]), r"config.*received"),
        (lambda: models.vgg([8, 0]), r"config.*received"),
        (lambda: models.vgg([8], batch_norm="yes"), r"batch_norm.*received"),
        (lambda: models.mlp(hidden=(50, -1)), r"hidden.*received: hidden=\(50, -1\)"),
        (lambda: models.mlp(input_shape=(0, 28)), r"input_shape.*received"),
        (lambda: models.small_cnn(filters=(8,)), r"filters.*received"),
        (lambda: models.small_cnn(input_shape=(2, 2, 1)), r"input_shape.*received"),
        (lambda: models.small_cnn(dense=0), r"dense.*received: dense=0"),
        (lambda: models.mlp(framework="torch"), r"framework.*received: framework='torch'"),
        (lambda: models.resnet(framework="keras2"), r"framework.*received: framework='keras2'"),
        (lambda: models.build("resnet9000"), r"depth.*received: depth=9000"),
        (lambda: models.build("resnet10"), r"depth must be 6n\+2"),
        (lambda: models.build("wrn15_4"), r"depth must be 6n\+4"),
        (lambda: models.build("alexnet"), r"name.*received: name='alexnet'"),
        (lambda: models.build(20), r"name.*received: name=20"),
        (lambda: models.build("resnet20", depth=14), r"depth.*received: depth=14"),
        (lambda: models.build("vgg11", config="vgg16"), r"config.*received"),
        (lambda: models.build("mlp", framework="jax"), r"framework.*received"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_depth_error_message_lists_valid_depths():
    with pytest.raises(ValueError) as info:
        models.resnet(depth=10)
    assert str(info.value) == (
        "depth must be 6n+2 (8, 14, 20, 32, 56, ...); received: depth=10"
    )


def test_to_tf_keras_rejects_framework_argument():
    # Fails before tf_keras would be imported.
    with pytest.raises(ValueError, match="framework"):
        models.to_tf_keras(models.mlp(), "mlp", framework="keras")
