/* libatomhello: the tiny shared library every Atom flavor builds on. */
#ifndef ATOMHELLO_H
#define ATOMHELLO_H

#define ATOMHELLO_VERSION "1.0"

/* The library's version string ("1.0"). */
const char *atomhello_version(void);

/* The CPU architecture the library was compiled for ("x86_64", "aarch64", ...). */
const char *atomhello_arch(void);

/* "Hello from <who>" in buf (at most size bytes); returns buf. */
char *atomhello_greet(char *buf, unsigned long size, const char *who);

#endif
