// Mesa's GBM (pkg-config gbm): the EGL platform used on a DRM render node.
#include <gbm.h>
