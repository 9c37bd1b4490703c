// libepoxy's EGL and GL dispatch (pkg-config epoxy). Most entry points are macros over function
// pointers, so the calls live in CVirglGlue; Swift sees the types and constants only.
#include <epoxy/egl.h>
#include <epoxy/gl.h>
