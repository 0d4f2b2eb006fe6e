#pragma once
// KVFLOW_SANITIZED is defined when this test is built with AddressSanitizer
// or ThreadSanitizer (GCC says so with __SANITIZE_*__, clang with
// __has_feature): their allocator replaces malloc, and they slow code ten
// times or more, so a test of malloc's behaviour or of timing may need to
// know.

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KVFLOW_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KVFLOW_SANITIZED 1
#endif
#endif
