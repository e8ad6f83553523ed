"""Identifiers kept by name when code is normalised: the C/C++ standard library, common POSIX and
Windows calls, and the Juliet suite's support API (testcasesupport/std_testcase_io.h).

Everything else a function names (its own name, its variables, types, fields, the functions it
calls within its program) is renamed to a placeholder, so names cannot announce a label. These
names stay because what a function calls (strcpy or strncpy, malloc or alloca) is the code's
meaning, the same in every program (the VulDeePecker normalisation, Li et al. 2018, keeps
library and API calls and renames user-defined names likewise). A kept name that carries a
label word (std::bad_alloc) is renamed all the same.
"""

from __future__ import annotations

_C_LIBRARY = """
abort abs acos asin assert atan atan2 atexit atof atoi atol atoll bsearch calloc ceil clearerr clock cos cosh
ctime difftime div exit exp fabs fclose feof ferror fflush fgetc fgets fgetwc fgetws floor fmod fopen fprintf
fputc fputs fputwc fputws fread free freopen frexp fscanf fseek fsetpos ftell fwide fwprintf fwrite fwscanf
getc getchar getenv gets getwc getwchar gmtime isalnum isalpha iscntrl isdigit isgraph islower isprint ispunct
isspace isupper iswalnum iswalpha iswdigit iswspace isxdigit labs ldexp ldiv llabs localtime log log10 longjmp
malloc mblen mbstowcs mbtowc memchr memcmp memcpy memmove memset mktime modf perror pow printf putc putchar
puts putwc putwchar qsort raise rand realloc remove rename rewind scanf setbuf setjmp setlocale setvbuf
signal sin sinh snprintf sprintf sqrt srand sscanf strcat strchr strcmp strcoll strcpy strcspn strerror
strftime strlen strncat strncmp strncpy strpbrk strrchr strspn strstr strtod strtok strtol strtoul strtoll
strtoull strxfrm swprintf swscanf system tan tanh time tmpfile tmpnam tolower toupper towlower towupper ungetc
vfprintf vprintf vsnprintf vsprintf vfwprintf vswprintf vwprintf wcscat wcschr wcscmp wcscpy wcscspn wcslen
wcsncat wcsncmp wcsncpy wcsrchr wcsstr wcstok wcstol wcstombs wctomb wmemcpy wmemmove wmemset wprintf wscanf
alloca strdup wcsdup fgetpos va_start va_end va_arg va_list
"""

_POSIX_AND_WINDOWS = """
accept bind close closesocket connect execl execlp execv execvp fork getpid getuid htons inet_addr inet_pton
listen lseek open read recv select send setuid shutdown sleep socket umask unlink write popen pclose pipe
chmod chown access stat fstat lstat mkstemp mktemp tempnam dup dup2 kill waitpid
_alloca _snprintf _snwprintf _vsnprintf _vsnwprintf _wfopen _wopen _open _close _read _write _wsystem _popen
_wpopen _pclose _execl _execv _wexecl _wexecv _spawnl _wspawnl _strdup _wcsdup _getcwd _mktemp _wmktemp _tempnam
_wtempnam _unlink _wunlink _sleep _beginthread _endthread _getch _stat _fstat _access _wcsicmp _stricmp
WSAStartup WSACleanup WSAData WSADATA MAKEWORD SOCKET INVALID_SOCKET SOCKET_ERROR AF_INET SOCK_STREAM
IPPROTO_TCP INADDR_ANY SOCKADDR sockaddr sockaddr_in sin_family sin_addr sin_port s_addr in_addr
HANDLE HKEY LPSTR LPWSTR LPCSTR LPCWSTR DWORD BOOL BYTE TRUE FALSE CloseHandle CreateFileA CreateFileW
RegOpenKeyExA RegOpenKeyExW RegCloseKey LoadLibraryA LoadLibraryW GetProcAddress LogonUserA LogonUserW
ImpersonateLoggedOnUser RevertToSelf GetLastError CreateProcessA CreateProcessW WinExec ShellExecuteA
OpenProcess TerminateProcess SetSecurityDescriptorDacl InitializeSecurityDescriptor HeapAlloc HeapFree
GetProcessHeap VirtualAlloc VirtualFree CryptAcquireContext CryptReleaseContext CryptGenRandom
"""

_TYPES_AND_MACROS = """
size_t ssize_t wchar_t wint_t ptrdiff_t intptr_t uintptr_t int8_t int16_t int32_t int64_t uint8_t uint16_t
uint32_t uint64_t FILE fpos_t time_t clock_t jmp_buf pid_t off_t mode_t socklen_t EOF WEOF BUFSIZ
FILENAME_MAX INT_MAX INT_MIN UINT_MAX LONG_MAX LONG_MIN LLONG_MAX LLONG_MIN SHRT_MAX SHRT_MIN CHAR_MAX CHAR_MIN
UCHAR_MAX ULONG_MAX SIZE_MAX RAND_MAX INT8_MAX INT16_MAX INT32_MAX INT64_MAX INT64_MIN UINT8_MAX UINT32_MAX
UINT64_MAX EXIT_SUCCESS EXIT_FAILURE O_RDONLY O_WRONLY O_RDWR O_CREAT O_TRUNC O_APPEND SEEK_SET SEEK_END
SEEK_CUR stdin stdout stderr errno EINTR ENOMEM MAX_PATH PATH_MAX SIGINT SIGTERM true false
"""

_CPP = """
std string wstring vector list map pair deque cout cerr cin endl exception runtime_error out_of_range
auto_ptr unique_ptr shared_ptr make_pair push_back c_str ifstream ofstream fstream
"""

# testcasesupport/std_testcase_io.h and std_testcase.h: the helpers every test case calls, good or flawed.
_JULIET_SUPPORT = """
printLine printWLine printIntLine printShortLine printFloatLine printLongLine printLongLongLine printSizeTLine
printHexCharLine printWcharLine printUnsignedLine printHexUnsignedCharLine printDoubleLine printStructLine
printBytesLine decodeHexChars decodeHexWChars globalReturnsTrue globalReturnsFalse globalReturnsTrueOrFalse
GLOBAL_CONST_TRUE GLOBAL_CONST_FALSE GLOBAL_CONST_FIVE globalTrue globalFalse globalFive globalArgc globalArgv
twoIntsStruct intOne intTwo ALLOCA URAND31 RAND32 URAND63 RAND64 stdThreadCreate stdThreadJoin
stdThreadDestroy stdThreadLockCreate stdThreadLockAcquire stdThreadLockRelease stdThreadLockDestroy
stdThread stdThreadLock
"""

KEPT_NAMES = frozenset(" ".join((_C_LIBRARY, _POSIX_AND_WINDOWS, _TYPES_AND_MACROS, _CPP, _JULIET_SUPPORT)).split())
