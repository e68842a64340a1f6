"""Downloading Matterport's trained COCO weights (``download_trained_weights``).

Nothing in the library downloads on its own: the samples call this for
``--weights=coco`` when the file is missing, and offline it raises an error
that says where to put a file fetched elsewhere.
"""
import os
import shutil
import urllib.error
import urllib.request

__all__ = ["COCO_MODEL_URL", "WeightsDownloadError", "download_trained_weights",
           "IMAGENET_WEIGHTS_URL", "get_imagenet_weights"]

# URL from which to download the latest COCO trained weights
COCO_MODEL_URL = "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"


class WeightsDownloadError(OSError):
    """``download_trained_weights`` could not fetch the file. The message says
    where to download it by hand and where to put it."""


def download_trained_weights(coco_model_path, verbose: int = 1, url: str = COCO_MODEL_URL,
                             timeout: float = 60) -> None:
    """Download COCO trained weights from Releases.

    coco_model_path: local path of COCO trained weights (e.g.
        "mask_rcnn_coco.h5"); parent folders are created.
    verbose: print progress messages if > 0.
    url: where to download from (Matterport's v2.0 release by default).
    timeout: seconds to wait for the server.

    The file is written to ``<path>.part`` and renamed when complete, so an
    interrupted download never leaves a truncated weights file behind.

    Raises WeightsDownloadError (an OSError) when offline or the transfer
    fails; the message gives the URL to fetch by hand and where to put it.
    """
    path = os.fspath(coco_model_path)
    if verbose > 0:
        print("Downloading pretrained model to " + path + " ...")
    folder = os.path.dirname(os.path.abspath(path))
    tmp = path + ".part"
    try:
        os.makedirs(folder, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, 'wb') as out:
            expected = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            shutil.copyfileobj(resp, out)
            written = out.tell()
        if expected is not None and int(expected) != written:
            raise OSError(f"got {written} of {expected} bytes")
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise WeightsDownloadError(
            f"Could not download the COCO weights from {url} ({e}). If this machine is "
            f"offline, download that file by hand (about 246 MB, "
            f"{os.path.basename(url)}) and save it as {os.path.abspath(path)}.") from e
    if verbose > 0:
        print("... done downloading pretrained model!")


############################################################
#  ImageNet weights (Matterport's --weights=imagenet)
############################################################

# Keras' ResNet-50 ImageNet weights without the top, as Matterport used.
IMAGENET_WEIGHTS_URL = ("https://github.com/fchollet/deep-learning-models/releases/download/"
                        "v0.2/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")


def get_imagenet_weights() -> str:
    """Downloads ImageNet trained weights from Keras (ResNet-50, no top)
    into Keras' cache (``~/.keras/models``) unless they are there already.
    Returns path to weights file. Offline, raises OSError saying where to
    put a file downloaded elsewhere."""
    import keras  # imported here: this module is also used before TensorFlow is loaded

    name = os.path.basename(IMAGENET_WEIGHTS_URL)
    try:
        return keras.utils.get_file(name, IMAGENET_WEIGHTS_URL, cache_subdir="models",
                                    md5_hash="a268eb855778b3df3c7506639542a6af")
    except Exception as e:  # offline
        cache = os.path.join(os.path.expanduser("~"), ".keras", "models", name)
        raise OSError(
            f"Could not download the ImageNet ResNet-50 weights ({e}). Download "
            f"{IMAGENET_WEIGHTS_URL} by hand and put it at {cache}.") from e
