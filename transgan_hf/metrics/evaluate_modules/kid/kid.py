# An `evaluate` metric module: evaluate.load(".../evaluate_modules/kid") works offline.
# (One `import` per line: evaluate's dependency scanner reads "import a, b" as a package named "a,".)
import evaluate

from transgan_hf.metrics.evaluate_support import COMMON_INPUTS_DESCRIPTION, TransGANImageMetric

_DESCRIPTION = (
    "Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 between Inception pool_3 features of "
    "generated and reference images with the kernel (x.y / d + 1)^3, averaged over random subsets (mean and std). "
    "Needs reference *features*: reference images, or statistics written with `transgan stats --save_features`. "
    "Lower is better. With feature_extractor='digits' the value is `kdd_mnist`."
)

_CITATION = (
    "@inproceedings{binkowski2018demystifying, title={Demystifying MMD GANs}, author={Bi{\\'n}kowski, Miko{\\l}aj "
    "and Sutherland, Dougal J. and Arbel, Michael and Gretton, Arthur}, booktitle={ICLR}, year={2018}}"
)

_KWARGS_DESCRIPTION = COMMON_INPUTS_DESCRIPTION + (
    "    kid_subsets: number of subsets (default 100). kid_subset_size: subset size (default 1000, capped at the set\n"
    "        sizes). seed: subset sampling seed (default 0).\n"
    "Returns:\n    kid, kid_std (floats), or kdd_mnist, kdd_mnist_std with the digit network.\n"
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KID(TransGANImageMetric, evaluate.Metric):
    metric_ids = ("kid",)
    metric_description = _DESCRIPTION
    metric_citation = _CITATION
    metric_inputs_description = _KWARGS_DESCRIPTION
    metric_reference_urls = ["https://arxiv.org/abs/1801.01401"]

    def _compute(self, predictions, kid_subsets=100, kid_subset_size=1000, seed=0, **kwargs):
        return self._evaluate(
            predictions, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, **kwargs
        )
