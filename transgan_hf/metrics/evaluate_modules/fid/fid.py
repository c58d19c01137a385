# An `evaluate` metric module: evaluate.load(".../evaluate_modules/fid") works offline.
# (One `import` per line: evaluate's dependency scanner reads "import a, b" as a package named "a,".)
import evaluate

from transgan_hf.metrics.evaluate_support import COMMON_INPUTS_DESCRIPTION, TransGANImageMetric

_DESCRIPTION = (
    "Fréchet Inception Distance (Heusel et al. 2017) with the TTUR protocol used by the TransGAN paper: 2048-d "
    "pool_3 features of the TensorFlow Inception 2015-12-05 network (PyTorch port, weights file "
    "pt_inception-2015-12-05-6726825d.pth) of uint8-quantised images, float64 mean/covariance, and a symmetric "
    "eigen-decomposition for the matrix square root (never NaN). Lower is better. With "
    "feature_extractor='digits' the value is the Fréchet Digit Distance `fdd_mnist` instead (not an FID)."
)

_CITATION = (
    "@inproceedings{heusel2017gans, title={GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash "
    "Equilibrium}, author={Heusel, Martin and Ramsauer, Hubert and Unterthiner, Thomas and Nessler, Bernhard and "
    "Hochreiter, Sepp}, booktitle={NeurIPS}, year={2017}}"
)

_KWARGS_DESCRIPTION = COMMON_INPUTS_DESCRIPTION + (
    "Returns:\n    fid (float), or fdd_mnist with the digit network.\n"
    "Example:\n    >>> fid = evaluate.load(transgan_hf.metrics.evaluate_module_path('fid'))\n"
    "    >>> fid.compute(predictions=images, reference_statistics='fid_stats_cifar10_train.npz')\n"
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FID(TransGANImageMetric, evaluate.Metric):
    metric_ids = ("fid",)
    metric_description = _DESCRIPTION
    metric_citation = _CITATION
    metric_inputs_description = _KWARGS_DESCRIPTION
    metric_reference_urls = ["https://github.com/bioinf-jku/TTUR", "https://arxiv.org/abs/1706.08500"]

    def _compute(self, predictions, **kwargs):
        return self._evaluate(predictions, **kwargs)
