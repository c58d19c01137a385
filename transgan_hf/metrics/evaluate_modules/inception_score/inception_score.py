# An `evaluate` metric module: evaluate.load(".../evaluate_modules/inception_score") works offline.
# (One `import` per line: evaluate's dependency scanner reads "import a, b" as a package named "a,".)
import evaluate

from transgan_hf.metrics.evaluate_support import COMMON_INPUTS_DESCRIPTION, TransGANImageMetric

_DESCRIPTION = (
    "Inception Score (Salimans et al. 2016) as the improved-GAN code computes it: softmax of the 1008 Inception "
    "logits without the classifier bias, exp(E KL(p(y|x) || p(y))) on 10 consecutive splits, mean and std. "
    "Higher is better. No reference set is needed. With feature_extractor='digits' the value is the digit IS "
    "`digit_is_mnist` (at most 10)."
)

_CITATION = (
    "@inproceedings{salimans2016improved, title={Improved Techniques for Training GANs}, author={Salimans, Tim and "
    "Goodfellow, Ian and Zaremba, Wojciech and Cheung, Vicki and Radford, Alec and Chen, Xi}, booktitle={NeurIPS}, "
    "year={2016}}"
)

_KWARGS_DESCRIPTION = COMMON_INPUTS_DESCRIPTION + (
    "    is_splits: number of splits (default 10). Reference arguments are not used.\n"
    "Returns:\n    inception_score, inception_score_std (floats), or digit_is_mnist, digit_is_mnist_std.\n"
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InceptionScore(TransGANImageMetric, evaluate.Metric):
    metric_ids = ("is",)
    metric_description = _DESCRIPTION
    metric_citation = _CITATION
    metric_inputs_description = _KWARGS_DESCRIPTION
    metric_reference_urls = ["https://arxiv.org/abs/1606.03498"]

    def _compute(self, predictions, is_splits=10, **kwargs):
        return self._evaluate(predictions, is_splits=is_splits, **kwargs)
