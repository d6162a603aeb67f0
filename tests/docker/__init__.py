"""Docker test harness: builds images with no registry (debootstrap base, host wheelhouse) and drives compose."""
