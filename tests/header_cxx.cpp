// The public header must compile as C++ (it is also compiled as C11 by every .c file and test).
#include "flash_mla.h"

static_assert(FLASH_MLA_VERSION == FLASH_MLA_VERSION_MAJOR * 10000 + FLASH_MLA_VERSION_MINOR * 100 + FLASH_MLA_VERSION_PATCH,
              "version macros");
int main() {
  flash_mla_decode_params_t p = {};
  p.dtype = FLASH_MLA_DTYPE_BF16;
  return flash_mla_decode_ref(&p) == FLASH_MLA_SUCCESS ? 1 : 0;  // NULL pointers must give a named error
}
