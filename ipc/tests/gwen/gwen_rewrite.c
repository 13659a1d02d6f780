/*
 * gwen_rewrite: the libgwenhywfar side of chipcard-ipc's differential test
 * (ipc/tests/gwen.rs). Built by that test with
 *   cc gwen_rewrite.c $(pkg-config --cflags --libs gwenhywfar)
 *
 * Usage: gwen_rewrite read|build < records > results
 *
 * Input: any number of records, each "<decimal length>\n" followed by exactly
 * that many bytes.
 *   read:  a record is a group-format document. It is read with
 *          GWEN_DB_ReadFromString(GWEN_DB_FLAGS_DEFAULT, plus
 *          GWEN_DB_FLAGS_ALLOW_EMPTY_STREAM so that an empty document is an
 *          empty DB rather than an error, and GWEN_PATH_FLAGS_CREATE_GROUP so
 *          that groups of the same name are kept apart instead of merged) and
 *          written back with GWEN_DB_WriteToBuffer(GWEN_DB_FLAGS_DEFAULT).
 *   build: a record is a list of lines, one DB operation each, with names and
 *          values hex-encoded so that any byte can be carried:
 *            G <hexname>          append a new group, enter it
 *            E                    leave the current group
 *            C <hexname> <hexval> append a char value to variable name
 *            I <hexname> <int>    append an int value
 *            B <hexname> <hexval> append a bin value
 *            Z <hexname>          a variable with no values (written as
 *                                 one holding a pointer value, which
 *                                 libgwenhywfar does not write)
 *          (empty hex is written as "-"). The DB built is written with
 *          GWEN_DB_WriteToBuffer(GWEN_DB_FLAGS_DEFAULT).
 *
 * Output: per record, "OK <length>\n" followed by that many bytes of
 * written text, or "ERR <code>\n" when libgwenhywfar refused the record.
 */
#include <gwenhywfar/gwenhywfar.h>
#include <gwenhywfar/db.h>
#include <gwenhywfar/buffer.h>
#include <gwenhywfar/logger.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *read_all(size_t *out_len) {
  size_t cap = 1 << 16, len = 0;
  unsigned char *buf = malloc(cap);
  size_t n;
  if (!buf)
    return NULL;
  while ((n = fread(buf + len, 1, cap - len, stdin)) > 0) {
    len += n;
    if (len == cap) {
      unsigned char *nb;
      cap *= 2;
      nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        return NULL;
      }
      buf = nb;
    }
  }
  *out_len = len;
  return buf;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Decodes the hex token at *p (up to a blank or end of line) into a new
 * NUL-terminated buffer; "-" is the empty string. */
static char *unhex(const char **p, const char *end, size_t *out_len) {
  const char *s = *p;
  const char *e = s;
  char *out;
  size_t n = 0;
  while (e < end && *e != ' ' && *e != '\n')
    e++;
  out = malloc((size_t)(e - s) / 2 + 1);
  if (!out)
    exit(3);
  if (!(e - s == 1 && *s == '-')) {
    const char *q;
    for (q = s; q + 1 < e; q += 2)
      out[n++] = (char)(hexval(q[0]) * 16 + hexval(q[1]));
  }
  out[n] = 0;
  *p = (e < end && *e == ' ') ? e + 1 : e;
  if (out_len)
    *out_len = n;
  return out;
}

static int build(GWEN_DB_NODE *root, const char *s, size_t len) {
  const char *end = s + len;
  GWEN_DB_NODE *stack[256];
  int depth = 0;
  stack[0] = root;
  while (s < end) {
    char op = *s;
    const char *p = s + 2;
    const char *eol = memchr(s, '\n', (size_t)(end - s));
    if (!eol)
      eol = end;
    if (op == 'G') {
      char *name = unhex(&p, eol, NULL);
      GWEN_DB_NODE *g = GWEN_DB_Group_new(name);
      GWEN_DB_AddGroup(stack[depth], g);
      if (depth + 1 >= 256)
        return -100;
      stack[++depth] = g;
      free(name);
    } else if (op == 'E') {
      if (depth == 0)
        return -101;
      depth--;
    } else if (op == 'C' || op == 'B' || op == 'I' || op == 'Z') {
      size_t vlen = 0;
      char *name = unhex(&p, eol, NULL);
      int rv = 0;
      if (op == 'C') {
        char *val = unhex(&p, eol, NULL);
        rv = GWEN_DB_SetCharValue(stack[depth], 0, name, val);
        free(val);
      } else if (op == 'B') {
        char *val = unhex(&p, eol, &vlen);
        rv = GWEN_DB_SetBinValue(stack[depth], 0, name, val, (unsigned)vlen);
        free(val);
      } else if (op == 'I') {
        rv = GWEN_DB_SetIntValue(stack[depth], 0, name, atoi(p));
      } else {
        /* libgwenhywfar cannot remove the last value of a variable, but
         * it never writes pointer values: a variable holding only one is
         * written exactly like a variable without values. */
        static int dummy;
        rv = GWEN_DB_SetPtrValue(stack[depth], 0, name, &dummy);
      }
      free(name);
      if (rv < 0)
        return rv;
    } else {
      return -102;
    }
    s = eol < end ? eol + 1 : end;
  }
  return depth == 0 ? 0 : -103;
}

int main(int argc, char **argv) {
  size_t len = 0, pos = 0;
  unsigned char *in;
  int build_mode;

  if (argc != 2 || (strcmp(argv[1], "read") && strcmp(argv[1], "build"))) {
    fprintf(stderr, "usage: %s read|build < records\n", argv[0]);
    return 2;
  }
  build_mode = strcmp(argv[1], "build") == 0;
  GWEN_Init();
  GWEN_Logger_SetLevel(GWEN_LOGDOMAIN, GWEN_LoggerLevel_Emergency);
  GWEN_Logger_SetLevel(NULL, GWEN_LoggerLevel_Emergency);

  in = read_all(&len);
  if (!in)
    return 3;
  while (pos < len) {
    size_t rlen = 0;
    GWEN_DB_NODE *db;
    int rv;
    char *doc;
    while (pos < len && in[pos] >= '0' && in[pos] <= '9')
      rlen = rlen * 10 + (size_t)(in[pos++] - '0');
    if (pos >= len || in[pos] != '\n' || pos + 1 + rlen > len) {
      fprintf(stderr, "bad record framing at byte %zu\n", pos);
      return 4;
    }
    pos++;
    /* a NUL-terminated copy: ReadFromString treats len 0 as strlen() */
    doc = malloc(rlen + 1);
    if (!doc)
      return 3;
    memcpy(doc, in + pos, rlen);
    doc[rlen] = 0;
    pos += rlen;

    db = GWEN_DB_Group_new("root");
    if (build_mode)
      rv = build(db, doc, rlen);
    else if (rlen == 0)
      rv = 0;
    else
      rv = GWEN_DB_ReadFromString(db, doc, (int)rlen,
                                  GWEN_DB_FLAGS_DEFAULT | GWEN_DB_FLAGS_ALLOW_EMPTY_STREAM |
                                      GWEN_PATH_FLAGS_CREATE_GROUP);
    if (rv < 0) {
      printf("ERR %d\n", rv);
    } else {
      GWEN_BUFFER *buf = GWEN_Buffer_new(0, 1024, 0, 1);
      rv = GWEN_DB_WriteToBuffer(db, buf, GWEN_DB_FLAGS_DEFAULT);
      if (rv < 0) {
        printf("ERR %d\n", rv);
      } else {
        uint32_t n = GWEN_Buffer_GetUsedBytes(buf);
        printf("OK %u\n", n);
        fwrite(GWEN_Buffer_GetStart(buf), 1, n, stdout);
      }
      GWEN_Buffer_free(buf);
    }
    GWEN_DB_Group_free(db);
    free(doc);
  }
  free(in);
  fflush(stdout);
  GWEN_Fini();
  return 0;
}
