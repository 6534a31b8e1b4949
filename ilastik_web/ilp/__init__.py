"""Desktop ilastik projects in and out: ``.ilp`` import, export and the raw data they name."""

from ilastik_web.ilp.exporter import export_ilp
from ilastik_web.ilp.importer import import_ilp
from ilastik_web.ilp.reader import IlpError, IlpProject, read_ilp

__all__ = ["IlpError", "IlpProject", "export_ilp", "import_ilp", "read_ilp"]
