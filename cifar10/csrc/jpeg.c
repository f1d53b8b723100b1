/* JPEG decoding through the system's libjpeg-turbo, which is what PIL decodes with: the same
 * integer IDCT and "fancy" chroma upsampling, so image folders decode to PIL's pixels
 * (measured bit-identical, docs/PERFORMANCE.md). Errors end the decode with libjpeg's
 * message; of the warnings only a truncated file does (PIL refuses those too; it ignores
 * the others). CMYK and YCCK files are left to the caller (return code in *width = 0). */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

struct sweep_err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *msg;
    unsigned long msg_len;
};

static void sweep_fail(j_common_ptr c) {
    struct sweep_err *e = (struct sweep_err *)c->err;
    char text[JMSG_LENGTH_MAX];
    (*c->err->format_message)(c, text);
    strncpy(e->msg, text, e->msg_len - 1);
    e->msg[e->msg_len - 1] = 0;
    longjmp(e->jump, 1);
}

static void sweep_warn(j_common_ptr c, int level) {
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) /* truncated */
        sweep_fail(c);
}

/* Decodes `len` bytes to RGB rows (malloc'd, width * height * 3 bytes; free with
 * sweep_jpeg_free). NULL on failure, with the reason in `msg`. Images above `max_pixels`
 * are refused before their pixels are allocated. */
unsigned char *sweep_jpeg_decode(const unsigned char *data, unsigned long len,
                                 unsigned long max_pixels, unsigned *width, unsigned *height,
                                 char *msg, unsigned long msg_len) {
    struct jpeg_decompress_struct c;
    struct sweep_err e;
    unsigned char *volatile buf = NULL;
    c.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = sweep_fail;
    e.pub.emit_message = sweep_warn;
    e.msg = msg;
    e.msg_len = msg_len;
    if (setjmp(e.jump)) {
        jpeg_destroy_decompress(&c);
        free(buf);
        return NULL;
    }
    jpeg_create_decompress(&c);
    jpeg_mem_src(&c, data, len);
    jpeg_read_header(&c, TRUE);
    /* Before anything is allocated for the pixels: a few bytes can declare 65500x65500. */
    if ((unsigned long)c.image_width * c.image_height > max_pixels) {
        snprintf(msg, msg_len, "%ux%u pixels, more than the %lu accepted", c.image_width,
                 c.image_height, max_pixels);
        jpeg_destroy_decompress(&c);
        return NULL;
    }
    if (c.jpeg_color_space == JCS_CMYK || c.jpeg_color_space == JCS_YCCK) {
        *width = 0;
        snprintf(msg, msg_len, "CMYK");
        jpeg_destroy_decompress(&c);
        return NULL;
    }
    /* Progressive files keep every coefficient in memory: bound that too. */
    c.mem->max_memory_to_use = 1024L * 1024L * 1024L;
    c.out_color_space = JCS_RGB;
    jpeg_start_decompress(&c);
    if (c.output_components != 3) {
        snprintf(msg, msg_len, "%d output components, expected 3", c.output_components);
        jpeg_destroy_decompress(&c);
        return NULL;
    }
    unsigned long row = (unsigned long)c.output_width * 3;
    buf = malloc(row * c.output_height);
    if (!buf) {
        snprintf(msg, msg_len, "out of memory");
        jpeg_destroy_decompress(&c);
        return NULL;
    }
    while (c.output_scanline < c.output_height) {
        unsigned char *p = buf + c.output_scanline * row;
        jpeg_read_scanlines(&c, &p, 1);
    }
    jpeg_finish_decompress(&c);
    jpeg_destroy_decompress(&c);
    *width = c.output_width;
    *height = c.output_height;
    return buf;
}

void sweep_jpeg_free(unsigned char *buf) { free(buf); }
