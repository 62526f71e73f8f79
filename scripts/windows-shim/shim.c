/* ProcessPrng for Wine 8.0, which lacks bcryptprimitives.dll: Rust >= 1.78's std imports it,
 * so without this shim no Rust test executable starts under Wine. See scripts/test-windows.sh. */
#include <windows.h>
#include <ntsecapi.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) { return RtlGenRandom(data, (ULONG)len); }
