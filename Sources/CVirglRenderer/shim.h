// libvirglrenderer's public header as installed (pkg-config virglrenderer adds -I.../virgl).
// The unstable section is wanted: callbacks version 4 (get_egl_display) lets virglrenderer use
// the EGL display this backend made instead of opening its own.
#define VIRGL_RENDERER_UNSTABLE_APIS 1
#include <virglrenderer.h>
