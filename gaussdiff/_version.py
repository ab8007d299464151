"""The package version, in a leaf module so that any module can read it without importing the
package face (which imports every module: that would be an import cycle)."""

__version__ = "0.1.0"
