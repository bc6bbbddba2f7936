"""Image choices and the spawn form fields they become (no server needed)."""

from nublado_sync import (
    NubladoImageByClass,
    NubladoImageByReference,
    NubladoImageByTag,
    NubladoImageSize,
    NubladoUsageError,
)

image = NubladoImageByTag("w_2026_40", NubladoImageSize.Small, debug=True)
print(image.to_spawn_form())
# {'image_tag': 'w_2026_40', 'size': 'Small', 'enable_debug': 'true'}
print(NubladoImageByClass("latest-daily", "Huge").to_spawn_form())
# {'image_class': 'latest-daily', 'size': 'Huge'}
print(NubladoImageByReference("ghcr.io/lsst-sqre/sciplat-lab:w_2026_40").to_spawn_form())
# {'image_list': 'ghcr.io/lsst-sqre/sciplat-lab:w_2026_40', 'size': 'Large'}
try:
    NubladoImageByClass(size="Enormous")
except NubladoUsageError as e:
    print(e)  # Unknown size 'Enormous'; expected one of Fine, Diminutive, ...
