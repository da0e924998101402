"""SavedModel export, atomic and checked by reloading."""

import numpy as np

from tfcompress.export.atomic import atomic_output


def to_saved_model(model, path, verify_data=None, atol=1e-5):
    """Exports a Keras model as a TensorFlow SavedModel folder (``serve`` endpoint).

    Args:
        model: a stripped Keras 3 model.
        path: output folder; written atomically (a failure leaves nothing there).
        verify_data: optional numpy inputs; the reloaded SavedModel must reproduce
            the Keras outputs on them within ``atol``.
        atol: verification tolerance.

    Returns:
        The path, as a string.

    Raises:
        tfcompress.export.ExportVerificationError: outputs differ beyond ``atol``.

    Example:
        >>> to_saved_model(model, "export/cnn", verify_data=x_test[:64])
    """
    import tensorflow as tf

    from tfcompress.export.tflite import ExportVerificationError

    with atomic_output(path, directory=True) as tmp:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
        if verify_data is not None:
            reloaded = tf.saved_model.load(str(tmp))
            got = np.asarray(reloaded.serve(tf.constant(verify_data, dtype="float32")))
            expected = np.asarray(model.predict(verify_data, verbose=0))
            error = float(np.max(np.abs(got - expected)))
            if error > atol:
                raise ExportVerificationError(
                    f"reloaded SavedModel differs from Keras by {error:.3g} > atol={atol}")
    return str(path)
