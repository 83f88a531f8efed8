"""How hard the digits split's validation and test images are for classifiers other than ours.

    python benchmarks/digits_split.py

Fits scikit-learn's ``SVC()`` (RBF kernel, its defaults) and a 3-nearest-neighbour classifier on the training
images of ``targetprop.load_dataset("digits")`` (pixels scaled to [0, 1], as our nets see them) and prints their
validation and test error %. Both splits come from one fixed permutation; if a classifier that is not ours also
errs more on validation than on test, the gap between the two is in the draw of images, not in our training.
"""

from __future__ import annotations

from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

from targetprop import load_dataset


def main() -> None:
    data = load_dataset("digits")
    train_x, train_y = data.train.x.flatten(1).numpy(), data.train.y.numpy()
    for name, classifier in (("SVC() (RBF)", SVC()), ("3-nearest neighbours", KNeighborsClassifier(3))):
        classifier.fit(train_x, train_y)
        errors = {
            split: 100.0 * float((classifier.predict(part.x.flatten(1).numpy()) != part.y.numpy()).mean())
            for split, part in (("validation", data.valid), ("test", data.test))
        }
        print(f"{name}: validation {errors['validation']:.2f} %, test {errors['test']:.2f} % error")


if __name__ == "__main__":
    main()
