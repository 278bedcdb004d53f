"""Published numbers for the presets' `paper` column, each read from the papers' plain text.

Every `PaperValue` names its paper (a file of the papers' folder: `$TFDEFENSE_PAPERS_DIR`, else
`shared/papers` beside the repository), its table, the row and column, and the number exactly as printed there;
`paper_values_test.py` checks every one against that text. Cells a paper reports only in a
figure or in a table that was an image (so its numbers did not survive into the text) are
marked `NOT_IN_TEXT` and reports print "not in the paper's text".

Presets fill their rows at the end of a run with `annotate_rows(run, lookup)`.
"""

import dataclasses

NOT_IN_TEXT = "not in the paper's text"


@dataclasses.dataclass(frozen=True)
class PaperValue:
    """One published number.

    paper: file name in the papers folder, e.g. "ape-gan.txt".
    table: the paper's table (or section, for a number stated in the prose).
    anchor: text that starts the table (its caption or header line) or the sentence.
    row, column: the row label as printed and the cell index after it (1 = first number);
      both None for a number in the prose, which must occur right after `anchor`.
    column_name: the column as the paper names it.
    text: the number as printed ("2.8", "0.96").
    percent: True when `text` is in %, so `value` is text / 100.
    """

    paper: str
    table: str
    anchor: str
    row: object
    column: object
    column_name: str
    text: str
    percent: bool = True

    @property
    def value(self):
        return float(self.text) / 100.0 if self.percent else float(self.text)

    @property
    def source(self):
        where = f"row '{self.row}', column '{self.column_name}'" if self.row is not None else self.column_name
        return f"{self.paper} {self.table}, {where}: {self.text}{'%' if self.percent else ''}"


# APE-GAN (ape-gan.txt) ---------------------------------------------------------------------------------
# Error rates in %. MNIST columns: the attack's target model, APE-GAN_m; CIFAR10: target model, APE-GAN_c.
APEGAN_TABLE1_ANCHOR = "Table 1: Error rates (in %) of adversarial examples generated from five methods"
APEGAN_TABLE2_ANCHOR = "Table 2: Error rates (in %) of benign input"
APEGAN_TABLE3_ANCHOR = "Table 3: Error rates (in %) of adversarial exmamples generated from FGSM with different"
APEGAN_SETUP_ANCHOR = "The 0.9%, 0.5% and 0.8% error rates"
APEGAN_CIFAR_SETUP_ANCHOR = "The 7.1%, 20.2%* and 9.9% error rates"

# preset attack name -> (Table 1 row label, cells: MNIST target, APE-GAN_m, CIFAR10 target, APE-GAN_c)
_APEGAN_TABLE1 = {
    "lbfgs": ("L-BFGS", ("93.4", "2.2", "92.7", "19.9")),
    "fgsm": ("FGSM", ("96.3", "2.8", "77.8", "26.4")),
    "deepfool": ("DeepFool", ("97.1", "2.2", "98.3", "19.2")),
    "jsma": ("JSMA", ("97.8", "38.6", "94.1", "38.3")),
    "cw_l0": ("CW-L₀", ("100.0", "27.0", "100.0", "46.9")),
    "cw_l2": ("CW-L₂", ("100.0", "1.5", "100.0", "30.5")),
    "cw_linf": ("CW-L_∞", ("100.0", "1.2", "100.0", "32.2")),
}
_APEGAN_TABLE2 = {
    "clean": ("clean image", ("0.8", "1.2", "9.9", "10.3")),
    "gaussian_noise": ("random Gaussian noise image", ("1.7", "1.6", "11.3", "10.7")),
}
_APEGAN_TABLE3 = {
    "0.1": ("$\\epsilon = 0.1$", ("35.9", "0.8", "77.8", "26.4")),
    "0.2": ("$\\epsilon = 0.2$", ("86.0", "1.1", "84.7", "45.2")),
    "0.3": ("$\\epsilon = 0.3$", ("96.3", "2.8", "86.3", "55.9")),
    "0.4": ("$\\epsilon = 0.4$", ("98.0", "21.0", "87.2", "63.4")),
}
# Which target model the paper attacks per attack (section 4.1.2).
APEGAN_TARGET_MODELS = {
    "mnist": {"lbfgs": "A", "deepfool": "A", "cw_l0": "B", "cw_l2": "B", "cw_linf": "B", "fgsm": "C", "jsma": "C"},
    "cifar10": {
        "lbfgs": "ResNet18",
        "deepfool": "ResNet18",
        "cw_l0": "D",
        "cw_l2": "D",
        "cw_linf": "D",
        "fgsm": "DenseNet40",
        "jsma": "DenseNet40",
    },
}
_APEGAN_COLUMNS = {
    "mnist": (("target", 1, "MNIST, Target Model"), ("apegan", 2, "MNIST, APE-GAN_m")),
    "cifar10": (("target", 3, "CIFAR10, Target Model"), ("apegan", 4, "CIFAR10, APE-GAN_c")),
}
_APEGAN_TABLE2_COLUMNS = {
    "mnist": (("target", 1, "MNIST, C"), ("apegan", 2, "MNIST, APE-GAN_m")),
    "cifar10": (("target", 3, "CIFAR10, DenseNet40"), ("apegan", 4, "CIFAR10, APE-GAN_c")),
}


def _table_values(anchor, table, rows, columns):
    values = {}
    for key, (label, cells) in rows.items():
        for column, index, name in columns:
            values[(column, key)] = PaperValue("ape-gan.txt", table, anchor, label, index, name, cells[index - 1])
    return values


def apegan_values(dataset):
    """APE-GAN's published error rates for `dataset` ("mnist" or "cifar10").

    Returns {"table1": {(column, attack)}, "table2": {(column, input)}, "table3": {(column, eps text)},
    "clean": {model: clean error rate of that target model}}, columns "target" / "apegan".
    """
    values = {
        "table1": _table_values(APEGAN_TABLE1_ANCHOR, "Table 1", _APEGAN_TABLE1, _APEGAN_COLUMNS[dataset]),
        "table2": _table_values(APEGAN_TABLE2_ANCHOR, "Table 2", _APEGAN_TABLE2, _APEGAN_TABLE2_COLUMNS[dataset]),
        "table3": _table_values(APEGAN_TABLE3_ANCHOR, "Table 3", _APEGAN_TABLE3, _APEGAN_COLUMNS[dataset]),
    }
    if dataset == "mnist":
        values["clean"] = {
            name: PaperValue(
                "ape-gan.txt",
                "section 4.1.2 (target models)",
                APEGAN_SETUP_ANCHOR,
                None,
                None,
                f"clean error rate of model {name}",
                text,
            )
            for name, text in (("A", "0.9"), ("B", "0.5"), ("C", "0.8"))
        }
    else:
        values["clean"] = {
            name: PaperValue(
                "ape-gan.txt",
                "section 4.1.2 (target models)",
                APEGAN_CIFAR_SETUP_ANCHOR,
                None,
                None,
                f"clean error rate of {name}",
                text,
            )
            for name, text in (("ResNet18", "7.1"), ("D", "20.2"), ("DenseNet40", "9.9"))
        }
    return values


# Versatile defense (versatile-defense.txt) ---------------------------------------------------------------
# Accuracy in %, Inception-v3 on ImageNet. Table 1's column headers (the six attack-specific models) are
# lost in the text; their order follows from the text: Table 2's "Atk-specific" column repeats Table 1's
# diagonal in the order FGSM, BIM, PGD, MI-FGSM, C&W, AutoAttack, and "81.43% when trained on MI-FGSM" is
# the fourth column's average.
VERSATILE_TABLE1_ANCHOR = "Attacks() | No defense | ||||||"
VERSATILE_TABLE2_ANCHOR = "Attacks() | No defense | Ours | Atk-specific | Random | WD+PD | WD+SR |"
VERSATILE_TABLE1_COLUMNS = ("fgsm", "bim", "pgd", "mifgsm", "cw_l2", "autoattack")  # trained on, columns 2-7
VERSATILE_ROWS = {
    "clean": "Clean",
    "fgsm": "FGSM",
    "bim": "BIM",
    "pgd": "PGD",
    "mifgsm": "MI-FGSM",
    "cw_l2": "C&W",
    "autoattack": "AutoAttack",
    "deepfool": "DeepFool",
    "average": "Average",
}
_VERSATILE_TABLE1 = {  # tested on -> cells: No defense, then the six attack-specific models
    "clean": ("100", "95.3", "96.5", "96.3", "95.6", "93.1", "91.7"),
    "fgsm": ("25.8", "83.2", "70.6", "80.7", "85.74", "60.35", "80.6"),
    "bim": ("1.8", "75.72", "90.42", "73.2", "71.3", "75.8", "70.3"),
    "pgd": ("2.4", "84.3", "83.7", "88.4", "77.45", "76.6", "83.14"),
    "mifgsm": ("0.1", "83.6", "77.36", "65.3", "86.34", "64.5", "67.8"),
    "cw_l2": ("0", "77.1", "77.4", "78.5", "76.4", "89.1", "78.1"),
    "autoattack": ("0.5", "67.1", "70.15", "77.8", "79.5", "79.7", "88.4"),
    "deepfool": ("0.4", "78.56", "73.3", "76.1", "79.1", "70.3", "80.7"),
}
VERSATILE_TABLE2_COLUMNS = (
    "none",
    "versatile",
    "attack-specific",
    "random resizing + padding",
    "pixel deflection + wavelet",
    "super-resolution + wavelet",
)
_VERSATILE_TABLE2_NAMES = ("No defense", "Ours", "Atk-specific", "Random", "WD+PD", "WD+SR")
_VERSATILE_TABLE2 = {
    "clean": ("100", "92.1", "94.75", "97.3", "96.5", "86.3"),
    "fgsm": ("25.8", "80.4", "83.2", "51.3", "37.5", "70.7"),
    "bim": ("1.8", "87.3", "90.42", "19.72", "28.9", "73.2"),
    "pgd": ("2.4", "86.76", "88.4", "21.3", "29.2", "79.4"),
    "mifgsm": ("0.1", "89.3", "86.34", "14.5", "15.44", "70.58"),
    "cw_l2": ("0", "88.4", "89.1", "90.1", "35.4", "87.5"),
    "autoattack": ("0.5", "83.7", "88.4", "20.1", "15.6", "71.8"),
    "deepfool": ("0.4", "80.3", "76.34", "88.9", "37.8", "73.36"),
}


def versatile_values():
    """{"table1": {(trained_on, tested_on)}, "table2": {(defense, tested_on)}}; tested_on includes "clean"."""
    table1, table2 = {}, {}
    for attack, cells in _VERSATILE_TABLE1.items():
        for index, trained_on in enumerate(VERSATILE_TABLE1_COLUMNS, start=2):
            table1[(trained_on, attack)] = PaperValue(
                "versatile-defense.txt",
                "Table 1",
                VERSATILE_TABLE1_ANCHOR,
                VERSATILE_ROWS[attack],
                index,
                f"model trained on {trained_on} (column {index}; headers lost in the text)",
                cells[index - 1],
            )
    for attack, cells in _VERSATILE_TABLE2.items():
        for index, (defense, name) in enumerate(
            zip(VERSATILE_TABLE2_COLUMNS, _VERSATILE_TABLE2_NAMES, strict=False), start=1
        ):
            table2[(defense, attack)] = PaperValue(
                "versatile-defense.txt",
                "Table 2",
                VERSATILE_TABLE2_ANCHOR,
                VERSATILE_ROWS[attack],
                index,
                name,
                cells[index - 1],
            )
    return {"table1": table1, "table2": table2}


# Pix2pix defense (pix2pix-defense.txt) --------------------------------------------------------------------
# Its Tables 1-6 (networks, successful-only accuracy, transfer, the Defense-GAN / MagNet / adversarial
# training comparison) were images: none of their numbers is in the text, nor the eps values of section
# 5.1 / 5.4. The prose gives the target models' clean test accuracy and a summary of Table 2.
_PIX2PIX_CLEAN_ANCHOR = "The prediction accuracies of Anet and Bnet on the test set are"
_PIX2PIX_CIFAR_CLEAN_ANCHOR = "The prediction accuracy of Rnet and Dnet on the test set is"
PIX2PIX_PROSE = {
    "Anet clean accuracy": PaperValue(
        "pix2pix-defense.txt", "section 5", _PIX2PIX_CLEAN_ANCHOR, None, None, "clean test accuracy of Anet", "98.96"
    ),
    "Bnet clean accuracy": PaperValue(
        "pix2pix-defense.txt", "section 5", _PIX2PIX_CLEAN_ANCHOR, None, None, "clean test accuracy of Bnet", "99.74"
    ),
    "Rnet clean accuracy": PaperValue(
        "pix2pix-defense.txt",
        "section 5",
        _PIX2PIX_CIFAR_CLEAN_ANCHOR,
        None,
        None,
        "clean test accuracy of Rnet",
        "93.63",
    ),
    "Dnet clean accuracy": PaperValue(
        "pix2pix-defense.txt",
        "section 5",
        _PIX2PIX_CIFAR_CLEAN_ANCHOR,
        None,
        None,
        "clean test accuracy of Dnet",
        "95.04",
    ),
    "MNIST defended accuracy (summary of Table 2)": PaperValue(
        "pix2pix-defense.txt",
        "section 5.2",
        "on the adversarial sample from 0 to almost",
        None,
        None,
        "MNIST accuracy on successful adversarial examples through the defense, all attacks ('almost')",
        "98",
    ),
}

# EGAN (egan.txt) -------------------------------------------------------------------------------------------
# Accuracy vs eps (Figure 4) and accuracy vs time at eps 0.5 (Figure 5) are figures: not in the text.
EGAN_PROSE = {
    "classifier clean accuracy": PaperValue(
        "egan.txt",
        "section 3.3",
        "This trained network classifies no attacked MNIST images with an effectiveness of",
        None,
        None,
        "clean accuracy of the paper's classifier",
        "99",
    ),
    "EGAN best above eps": PaperValue(
        "egan.txt",
        "section 3.4",
        "is the best method for values of Epsilon higher than",
        None,
        None,
        "eps above which EGAN is the best method (Figure 4)",
        "0.25",
        percent=False,
    ),
}

# AdvGAN poster (advgan-poster.txt): accuracy of network D after one step of perturbation.
_ADVGAN_TABLE1_ANCHOR = "Table 1. Accuracy of 1-step perturbation."
ADVGAN_TABLE1 = {
    (method, intensity): PaperValue(
        "advgan-poster.txt", "Table 1", _ADVGAN_TABLE1_ANCHOR, intensity, index, method, cells[index - 1], percent=False
    )
    for intensity, cells in (
        ("0.1", ("0.96", "0.97")),
        ("0.3", ("0.76", "0.55")),
        ("0.5", ("0.37", "0.15")),
        ("0.7", ("0.06", "0.05")),
    )
    for index, method in ((1, "FastGrad"), (2, "GAN"))
}


def all_values():
    """Every PaperValue of this module (for the text check)."""
    values = []
    for dataset in ("mnist", "cifar10"):
        for table in apegan_values(dataset).values():
            values += list(table.values())
    for table in versatile_values().values():
        values += list(table.values())
    values += list(PIX2PIX_PROSE.values()) + list(EGAN_PROSE.values()) + list(ADVGAN_TABLE1.values())
    return values


def annotate_rows(run, lookup, note=None):
    """Fills the paper column of `run.rows` from `lookup(row)` -> PaperValue, NOT_IN_TEXT or None.

    Sets `paper_value` and `paper_source` for a PaperValue, `paper_note` for NOT_IN_TEXT and
    leaves rows with None alone (the paper has no such cell). Runs over every row, so rows
    reused from stored steps are filled too. `note` is added to the report's notes.
    """
    for row in run.rows:
        found = lookup(row)
        if isinstance(found, PaperValue):
            row["paper_value"] = found.value
            row["paper_source"] = found.source
            row.pop("paper_note", None)
        elif found == NOT_IN_TEXT:
            row["paper_value"] = None
            row["paper_note"] = NOT_IN_TEXT
    if note:
        run.note(note)
