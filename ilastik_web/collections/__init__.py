"""Image collections: a folder (or list) of 2D images or small 3D stacks, annotated one
item at a time, with the annotations stored beside the data in ``annotations/``."""

from ilastik_web.collections.annotations import AnnotationStore, ItemAnnotation
from ilastik_web.collections.assignment import Assignments
from ilastik_web.collections.collection import LOCAL_USER, Collection, CollectionItem

__all__ = ["LOCAL_USER", "AnnotationStore", "Assignments", "Collection", "CollectionItem",
           "ItemAnnotation"]
