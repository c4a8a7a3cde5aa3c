/* dataset_imagefolder.c - JPEG datasets on disk: a list of files and labels, decoded later.
 *
 * Three layouts (data.path is the root):
 *  - imagefolder: train/<class>/<image> and val/<class>/<image> (torchvision's ImageFolder). Tiny-
 *    ImageNet's own layout loads as it is: a class folder without images of its own takes those of
 *    its images/ subfolder (train/<wnid>/images/, beside <wnid>_boxes.txt), and a val/ holding
 *    val_annotations.txt (tab-separated: file, WNID, box) is read as val/images/ labelled by that
 *    file, the WNIDs mapped through train/'s sorted folders - the labels torchvision's ImageFolder
 *    gives once val/ is sorted into class folders, as the V1-constrained reference asks (its 7.1).
 *  - imagenet100, the Kaggle ambityga/imagenet100 layout: train.X1 .. train.X4/<wnid>/ (the classes
 *    spread over the shards; every shard present is scanned), val.X/<wnid>/ and Labels.json. The
 *    label of a class is its position in Labels.json (insertion order), as in FlexNet's reference
 *    code - not the sorted WNID order (flexnet.md section 4). configs/flexnet/imagenet100_classes.txt
 *    ships that order, for copies of the dataset without Labels.json (class_list = that file).
 *  - imagenet (ILSVRC-2012): train/<wnid>/ and val/<wnid>/ (the layout torchvision and most scripts
 *    use), or the official flat val/ with [data] val_labels naming LOC_val_solution.csv (the WNID of
 *    each image is the first word of its PredictionString); labels are sorted WNIDs.
 * Without Labels.json or a class list, both splits' classes are train/'s sorted folders: val/ (or a
 * val_dir, or val_annotations.txt) is labelled through them by name, and a validation class that
 * train/ lacks is an error, as is a class without validation images.
 * data.class_list (a file of folder names, one a line) selects and orders the classes of any
 * layout. Files ending .jpg/.jpeg (any case) are taken, sorted by name within a class, classes in
 * label order, so the list is the same on every machine. A limit keeps an evenly spaced subset,
 * so every class stays represented; [data] subset is drawn afterwards, from what the limit kept
 * (dataset.c, as for the stored datasets). Missing directories and empty classes fail here, at open. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "bioflex/image.h"
#include "fsutil.h"

#define MAX_ROOTS 8
#define MAX_CLASSES 100000

typedef struct name_list {
    char **items;
    int count, cap;
} name_list;

static void names_free(name_list *l) {
    for (int i = 0; i < l->count; i++) free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* The index of name in l, or -1. */
static int names_find(const name_list *l, const char *name) {
    for (int i = 0; i < l->count; i++)
        if (strcmp(l->items[i], name) == 0) return i;
    return -1;
}

static bf_status names_add(name_list *l, const char *name) {
    if (l->count == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        char **p = realloc(l->items, (size_t)cap * sizeof *p);
        if (!p) return bf_error(BF_ERR_OOM, "out of memory listing files");
        l->items = p;
        l->cap = cap;
    }
    l->items[l->count] = strdup(name);
    if (!l->items[l->count]) return bf_error(BF_ERR_OOM, "out of memory listing files");
    l->count++;
    return BF_OK;
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_jpeg_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0);
}

/* Entries of `dir` (sorted): subdirectories when want_dirs, else JPEG-named files. */
static bf_status list_dir(const char *dir, int want_dirs, name_list *out) {
    DIR *d = opendir(dir);
    if (!d) return bf_error(BF_ERR_IO, "cannot open directory %s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[BF_PATH_MAX * 2];
    bf_status st = BF_OK;
    while (st == BF_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (want_dirs ? is_dir(path) : (!is_dir(path) && is_jpeg_name(e->d_name))) st = names_add(out, e->d_name);
    }
    closedir(d);
    if (st == BF_OK && out->count > 1) qsort(out->items, (size_t)out->count, sizeof *out->items, compare_names);
    return st;
}

/* Class names from a file, one a line (blank lines and '#' comments ignored). A name is one folder
 * name: with a '/' or as '.' or '..' it would reach outside the split's folder (val/../train/x puts
 * training images in the test set). */
static bf_status read_class_list(const char *path, name_list *out) {
    if (is_dir(path))
        return bf_error(BF_ERR_IO, "[data] class_list = %s is a directory; expected a file of class folder names, "
                        "one a line", path);
    FILE *f = fopen(path, "r");
    if (!f) return bf_error(BF_ERR_IO, "[data] class_list = %s: cannot open: %s", path, strerror(errno));
    char line[512];
    bf_status st = BF_OK;
    int line_no = 0;
    while (st == BF_OK && fgets(line, sizeof line, f)) {
        char *s = line, *end;
        line_no++;
        while (isspace((unsigned char)*s)) s++;
        end = s + strlen(s);
        while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
        if (!*s || *s == '#') continue;
        int repeated = names_find(out, s); /* a class twice would give its files two labels */
        if (strlen(s) >= 64) st = bf_error(BF_ERR_FORMAT, "%s: class name '%s' is longer than 63 characters", path, s);
        else if (strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, ".."))
            st = bf_error(BF_ERR_FORMAT, "%s:%d: class '%s' is not a single folder name (allowed: the name of a class "
                          "folder, without '/', not '.' or '..')", path, line_no, s);
        else if (repeated >= 0)
            st = bf_error(BF_ERR_FORMAT, "%s:%d: class '%s' is listed twice (already as class %d)", path, line_no, s,
                          repeated);
        else st = names_add(out, s);
    }
    if (st == BF_OK && ferror(f)) st = bf_error(BF_ERR_IO, "[data] class_list = %s: read error: %s", path, strerror(errno));
    fclose(f);
    if (st == BF_OK && out->count == 0) st = bf_error(BF_ERR_FORMAT, "%s: no class names (one a line expected)", path);
    return st;
}

/* Labels.json's keys in file order (cJSON keeps insertion order). */
static bf_status read_labels_json(const char *path, name_list *out) {
    char *text = NULL;
    BF_TRY(bf_read_file_text(path, &text));
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return bf_error(BF_ERR_FORMAT, "%s: not a JSON object mapping WNID -> class name", path);
    }
    bf_status st = BF_OK;
    for (cJSON *it = root->child; it && st == BF_OK; it = it->next) {
        int repeated = names_find(out, it->string); /* JSON allows it; the folder would get two labels */
        st = repeated >= 0 ? bf_error(BF_ERR_FORMAT, "%s: WNID '%s' is a key twice (classes %d and %d)", path,
                                      it->string, repeated, out->count)
                           : names_add(out, it->string);
    }
    cJSON_Delete(root);
    return st;
}

void bf_image_files_free(bf_image_files *f) {
    if (!f) return;
    free(f->paths);
    free(f->path_storage);
    free(f->class_names);
    free(f);
}

/* Where a split's labels come from: its class folders, or (validation only) a file labelling the
 * images of one flat folder: ILSVRC's official val/ with [data] val_labels = LOC_val_solution.csv,
 * or Tiny-ImageNet's val/images/ with val/val_annotations.txt. The latter is found by itself: such a
 * val/ has no class folders, so it has no other reading. */
typedef enum label_source { LABELS_FROM_FOLDERS, LABELS_ILSVRC_CSV, LABELS_TINY_ANNOTATIONS } label_source;

/* The label source of a split; the label file's path goes to `file` ("" for class folders). A
 * val_dir holds class folders (an ImageNet-C or Tiny-ImageNet-C cell). */
static label_source split_label_source(const bf_data_config *cfg, bf_split split, char *file, size_t size) {
    file[0] = '\0';
    if (split != BF_SPLIT_TEST || cfg->val_dir[0] || cfg->dataset == BF_DATASET_IMAGENET100) return LABELS_FROM_FOLDERS;
    if (cfg->dataset == BF_DATASET_IMAGENET && cfg->val_labels[0]) {
        snprintf(file, size, "%s", cfg->val_labels);
        return LABELS_ILSVRC_CSV;
    }
    snprintf(file, size, "%s/val/val_annotations.txt", cfg->path);
    if (is_file(file)) return LABELS_TINY_ANNOTATIONS;
    file[0] = '\0';
    return LABELS_FROM_FOLDERS;
}

/* How the errors name a label file: the key that gave it, or the file Tiny-ImageNet ships. */
static void label_file_name(label_source source, const char *file, char *out, size_t size) {
    if (source == LABELS_ILSVRC_CSV) snprintf(out, size, "[data] val_labels = %s", file);
    else snprintf(out, size, "%s", file);
}

typedef struct val_label {
    char *image; /* ImageId: the file name without its extension */
    int label;   /* index into the classes, -1 for a class that is not selected */
} val_label;

static int compare_val_labels(const void *a, const void *b) {
    return strcmp(((const val_label *)a)->image, ((const val_label *)b)->image);
}

static int class_index(const name_list *classes, const char *wnid) {
    for (int c = 0; c < classes->count; c++)
        if (!strcmp(classes->items[c], wnid)) return c;
    return -1;
}

/* Reads a label file, sorted by ImageId (the file name without its extension): ILSVRC's
 * LOC_val_solution.csv ("ImageId,PredictionString", the string "wnid x0 y0 x1 y1 ...") or
 * Tiny-ImageNet's val_annotations.txt ("val_0.JPEG<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1"). */
static bf_status read_val_labels(label_source source, const char *path, const name_list *classes,
                                 const char *train_root, val_label **out, int *count) {
    const int tiny = source == LABELS_TINY_ANNOTATIONS;
    const char separator = tiny ? '\t' : ',';
    const char *expected = tiny ? "file<TAB>WNID<TAB>box (Tiny-ImageNet's val_annotations.txt)"
                                : "ImageId,PredictionString (a WNID first)";
    char name[BF_PATH_MAX + 64];
    label_file_name(source, path, name, sizeof name);
    FILE *f = fopen(path, "r");
    if (!f) return bf_error(BF_ERR_IO, "%s: cannot open: %s", name, strerror(errno));
    val_label *v = NULL;
    int n = 0, cap = 0, lineno = 0;
    char line[4096];
    bf_status st = BF_OK;
    while (st == BF_OK && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || (!tiny && lineno == 1 && !strncmp(line, "ImageId", 7))) continue;
        char *comma = strchr(line, separator);
        char *wnid = comma ? comma + 1 : NULL;
        while (wnid && isspace((unsigned char)*wnid)) wnid++;
        if (!comma || comma == line || !wnid || !*wnid) {
            st = bf_error(BF_ERR_FORMAT, "%s:%d: expected %s, got '%s'", path, lineno, expected, line);
            break;
        }
        *comma = '\0';
        wnid[strcspn(wnid, " \t")] = '\0';
        char *dot = tiny ? strrchr(line, '.') : NULL; /* the annotations name the file, the CSV its ImageId */
        if (dot) *dot = '\0';
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            val_label *p = realloc(v, (size_t)cap * sizeof *p);
            if (!p) {
                st = bf_error(BF_ERR_OOM, "out of memory reading %s", path);
                break;
            }
            v = p;
        }
        v[n].image = strdup(line);
        v[n].label = class_index(classes, wnid);
        if (!v[n].image) st = bf_error(BF_ERR_OOM, "out of memory reading %s", path);
        else if (v[n].label < 0 && train_root) {
            free(v[n].image);
            st = bf_error(BF_ERR_FORMAT, "%s:%d: WNID %s is not a class folder of %s (the labels are that folder's "
                          "class folders, by name; set [data] class_list to evaluate on some classes only)",
                          path, lineno, wnid, train_root);
        }
        else n++;
    }
    fclose(f);
    if (st == BF_OK && n == 0) st = bf_error(BF_ERR_FORMAT, "%s: no lines of %s", path, expected);
    if (st != BF_OK) {
        for (int i = 0; i < n; i++) free(v[i].image);
        free(v);
        return st;
    }
    qsort(v, (size_t)n, sizeof *v, compare_val_labels);
    for (int i = 1; i < n && st == BF_OK; i++) /* an image with two lines: which label would be a guess */
        if (strcmp(v[i - 1].image, v[i].image) == 0)
            st = bf_error(BF_ERR_FORMAT, "%s: %s %s is on two lines", path, tiny ? "image" : "ImageId", v[i].image);
    if (st != BF_OK) {
        for (int i = 0; i < n; i++) free(v[i].image);
        free(v);
        return st;
    }
    *out = v;
    *count = n;
    return BF_OK;
}

/* The files of a flat validation folder in name order with their labels from the label file; images
 * of classes outside a class list are left out, an image missing from the file, a WNID that is not
 * a class folder of train/ (without a class list) or a class without images is an error. */
static bf_status collect_flat_val(const bf_data_config *cfg, label_source source, const char *label_file,
                                  const char *root, const name_list *classes, name_list *files, int32_t **labels) {
    val_label *v = NULL;
    int nv = 0;
    char train_root[BF_PATH_MAX + 16];
    snprintf(train_root, sizeof train_root, "%s/train", cfg->path);
    BF_TRY(read_val_labels(source, label_file, classes, cfg->class_list[0] ? NULL : train_root, &v, &nv));
    const char *kind = bf_dataset_name(cfg->dataset);
    char name[BF_PATH_MAX + 64];
    label_file_name(source, label_file, name, sizeof name);
    name_list names = {0};
    bf_status st = list_dir(root, 0, &names);
    int *per_class = calloc((size_t)classes->count, sizeof *per_class);
    int32_t *lab = malloc(((size_t)names.count + 1) * sizeof *lab);
    if (st == BF_OK && (!per_class || !lab)) st = bf_error(BF_ERR_OOM, "out of memory listing %s", root);
    for (int i = 0; i < names.count && st == BF_OK; i++) {
        char key[256], path[BF_PATH_MAX * 3];
        snprintf(key, sizeof key, "%s", names.items[i]);
        char *dot = strrchr(key, '.');
        if (dot) *dot = '\0';
        val_label probe = {.image = key}, *hit = bsearch(&probe, v, (size_t)nv, sizeof *v, compare_val_labels);
        if (!hit) {
            st = bf_error(BF_ERR_FORMAT, "%s: %s/%s has no line in %s", kind, root, names.items[i], name);
            break;
        }
        if (hit->label < 0) continue;
        snprintf(path, sizeof path, "%s/%s", root, names.items[i]);
        lab[files->count] = hit->label;
        per_class[hit->label]++;
        st = names_add(files, path);
    }
    for (int c = 0; c < classes->count && st == BF_OK; c++)
        if (per_class[c] == 0)
            st = bf_error(BF_ERR_IO, "%s: class %s (label %d) has no validation image in %s (per %s)", kind,
                          classes->items[c], c, root, label_file);
    names_free(&names);
    free(per_class);
    for (int i = 0; i < nv; i++) free(v[i].image);
    free(v);
    if (st != BF_OK) {
        free(lab);
        return st;
    }
    *labels = lab;
    return BF_OK;
}

static bf_status open_layout(const bf_data_config *cfg, bf_split split, label_source source,
                             char roots[MAX_ROOTS][BF_PATH_MAX + 16], int *num_roots, name_list *classes) {
    const char *base = cfg->path;
    const char *kind = bf_dataset_name(cfg->dataset);
    if (!base[0]) return bf_error(BF_ERR_CONFIG, "dataset = %s needs [data] path (the dataset's root directory)", kind);
    if (!is_dir(base)) return bf_error(BF_ERR_IO, "dataset = %s: [data] path %s is not a directory", kind, base);
    *num_roots = 0;
    if (split != BF_SPLIT_TRAIN && cfg->val_dir[0]) { /* another test set, the classes still the dataset's */
        if (!is_dir(cfg->val_dir)) return bf_error(BF_ERR_IO, "%s: [data] val_dir %s is not a directory", kind, cfg->val_dir);
        if (cfg->val_labels[0]) return bf_error(BF_ERR_CONFIG, "[data] val_dir holds class folders: it does not take val_labels");
        snprintf(roots[0], BF_PATH_MAX + 16, "%s", cfg->val_dir);
        *num_roots = 1;
    } else if (cfg->dataset == BF_DATASET_IMAGENET100) {
        if (split == BF_SPLIT_TRAIN) {
            for (int i = 1; i <= 4; i++) {
                snprintf(roots[*num_roots], BF_PATH_MAX + 16, "%s/train.X%d", base, i);
                if (is_dir(roots[*num_roots])) (*num_roots)++;
            }
        } else {
            snprintf(roots[0], BF_PATH_MAX + 16, "%s/val.X", base);
            if (is_dir(roots[0])) *num_roots = 1;
        }
        if (*num_roots == 0)
            return bf_error(BF_ERR_IO, "imagenet100: %s has no %s (expected the Kaggle layout train.X1..train.X4, "
                                       "val.X, Labels.json)", base, split == BF_SPLIT_TRAIN ? "train.X1..4" : "val.X");
    } else {
        if (cfg->val_labels[0] && cfg->dataset != BF_DATASET_IMAGENET)
            return bf_error(BF_ERR_CONFIG, "[data] val_labels is for dataset = imagenet (ILSVRC's flat val/), not %s",
                            kind);
        snprintf(roots[0], BF_PATH_MAX + 16, "%s/%s", base, split == BF_SPLIT_TRAIN ? "train" : "val");
        if (!is_dir(roots[0]))
            return bf_error(BF_ERR_IO, "%s: missing directory %s (expected %s/train/<class>/*.JPEG and "
                                       "%s/val/<class>/*.JPEG)", kind, roots[0], base, base);
        if (source == LABELS_TINY_ANNOTATIONS) { /* Tiny-ImageNet: val/images/, labelled by val_annotations.txt */
            snprintf(roots[0], BF_PATH_MAX + 16, "%s/val/images", base);
            if (!is_dir(roots[0]))
                return bf_error(BF_ERR_IO, "%s: %s/val has val_annotations.txt but no images/ folder (Tiny-ImageNet's "
                                           "layout: val/images/*.JPEG)", kind, base);
        }
        *num_roots = 1;
    }
    if (cfg->class_list[0]) return read_class_list(cfg->class_list, classes);
    char labels[BF_PATH_MAX + 16];
    snprintf(labels, sizeof labels, "%s/Labels.json", base);
    if (cfg->dataset == BF_DATASET_IMAGENET100) {
        struct stat st;
        if (stat(labels, &st) != 0)
            return bf_error(BF_ERR_IO, "imagenet100: %s is missing; it gives the label order. Set [data] class_list "
                                       "= configs/flexnet/imagenet100_classes.txt (the same order) instead", labels);
        return read_labels_json(labels, classes);
    }
    /* The classes are train/'s class folders, sorted, for both splits: the test split's folders are
     * labelled by name through them (labelled by their own listing, a val/ without one class would
     * shift every later label). A test folder that train/ lacks has no label: an error, naming it. */
    char train_root[BF_PATH_MAX + 16];
    snprintf(train_root, sizeof train_root, "%s/train", base);
    BF_TRY(list_dir(train_root, 1, classes));
    if (classes->count == 0) return bf_error(BF_ERR_IO, "%s: %s has no class folders", kind, train_root);
    if (split == BF_SPLIT_TRAIN || source != LABELS_FROM_FOLDERS) return BF_OK;
    name_list test_folders = {0};
    bf_status st = list_dir(roots[0], 1, &test_folders);
    for (int i = 0; i < test_folders.count && st == BF_OK; i++)
        if (names_find(classes, test_folders.items[i]) < 0)
            st = bf_error(BF_ERR_FORMAT, "%s: %s/%s is a class folder that %s lacks (the test split's labels are the "
                          "class folders of %s, by name; remove it, or set [data] class_list to select classes)",
                          kind, roots[0], test_folders.items[i], train_root, train_root);
    names_free(&test_folders);
    return st;
}

bf_status bf_dataset_open_images(const bf_data_config *cfg, bf_split split, bf_dataset **out) {
    *out = NULL;
    char roots[MAX_ROOTS][BF_PATH_MAX + 16];
    int num_roots = 0;
    name_list classes = {0}, files = {0};
    int32_t *labels = NULL;
    char label_file[BF_PATH_MAX + 32];
    const label_source source = split_label_source(cfg, split, label_file, sizeof label_file);
    bf_status st = open_layout(cfg, split, source, roots, &num_roots, &classes);
    int expected = cfg->dataset == BF_DATASET_IMAGENET100 ? 100 : cfg->dataset == BF_DATASET_IMAGENET ? 1000 : 0;
    if (st == BF_OK && classes.count > MAX_CLASSES) st = bf_error(BF_ERR_FORMAT, "too many classes (%d)", classes.count);
    if (st == BF_OK && expected && !cfg->class_list[0] && classes.count != expected)
        st = bf_error(BF_ERR_FORMAT, "%s: found %d classes, expected %d (set [data] class_list to use a subset)",
                      bf_dataset_name(cfg->dataset), classes.count, expected);
    /* Files: class by class in label order, every root, each folder sorted (a flat val/: name order). */
    int cap_labels = 0;
    char dir[BF_PATH_MAX * 2];
    if (st == BF_OK && source != LABELS_FROM_FOLDERS)
        st = collect_flat_val(cfg, source, label_file, roots[0], &classes, &files, &labels);
    for (int c = 0; c < classes.count && st == BF_OK && source == LABELS_FROM_FOLDERS; c++) {
        int before = files.count, found_dir = 0;
        for (int r = 0; r < num_roots && st == BF_OK; r++) {
            snprintf(dir, sizeof dir, "%s/%s", roots[r], classes.items[c]);
            if (!is_dir(dir)) continue;
            found_dir = 1;
            name_list names = {0};
            st = list_dir(dir, 0, &names);
            /* A class folder without images of its own takes those of its images/ subfolder:
             * Tiny-ImageNet's train/<wnid>/ holds images/ and <wnid>_boxes.txt. */
            size_t len = strlen(dir);
            if (st == BF_OK && names.count == 0 && len + 8 < sizeof dir) {
                snprintf(dir + len, sizeof dir - len, "/images");
                if (is_dir(dir)) st = list_dir(dir, 0, &names);
                else dir[len] = '\0';
            }
            for (int i = 0; i < names.count && st == BF_OK; i++) {
                char path[BF_PATH_MAX * 3];
                snprintf(path, sizeof path, "%s/%s", dir, names.items[i]);
                st = names_add(&files, path);
            }
            names_free(&names);
        }
        if (st != BF_OK) break;
        if (!found_dir)
            st = bf_error(BF_ERR_IO, "%s: class %s (label %d) has no folder in %s%s", bf_dataset_name(cfg->dataset),
                          classes.items[c], c, roots[0], num_roots > 1 ? " or the other train.X shards" : "");
        else if (files.count == before)
            st = bf_error(BF_ERR_IO, "%s: class %s (label %d) has no .jpg/.jpeg images in %s",
                          bf_dataset_name(cfg->dataset), classes.items[c], c, dir);
        if (st == BF_OK && files.count > cap_labels) {
            cap_labels = files.cap;
            int32_t *p = realloc(labels, (size_t)cap_labels * sizeof *p);
            if (!p) st = bf_error(BF_ERR_OOM, "out of memory for labels");
            else labels = p;
        }
        for (int i = before; st == BF_OK && i < files.count; i++) labels[i] = c;
    }

    bf_dataset *d = NULL;
    bf_image_files *f = NULL;
    if (st == BF_OK) {
        d = calloc(1, sizeof *d);
        f = calloc(1, sizeof *f);
        if (!d || !f) st = bf_error(BF_ERR_OOM, "out of memory for the dataset");
    }
    if (st == BF_OK) {
        /* An evenly spaced subset under a limit keeps every class. */
        int limit = split == BF_SPLIT_TRAIN ? cfg->train_limit : cfg->test_limit;
        int n = (limit > 0 && limit < files.count) ? limit : files.count;
        size_t bytes = 0;
        for (int i = 0; i < n; i++) bytes += strlen(files.items[(long long)i * files.count / n]) + 1;
        f->paths = malloc((size_t)n * sizeof *f->paths);
        f->path_storage = malloc(bytes);
        f->class_names = calloc((size_t)classes.count, sizeof *f->class_names);
        d->labels = malloc((size_t)n * sizeof *d->labels);
        if (!f->paths || !f->path_storage || !f->class_names || !d->labels) {
            st = bf_error(BF_ERR_OOM, "out of memory for %d file names", n);
        } else {
            char *p = f->path_storage;
            for (int i = 0; i < n; i++) {
                int src = (int)((long long)i * files.count / n);
                size_t len = strlen(files.items[src]) + 1;
                memcpy(p, files.items[src], len);
                f->paths[i] = p;
                p += len;
                d->labels[i] = labels[src];
            }
            for (int c = 0; c < classes.count; c++)
                snprintf(f->class_names[c], sizeof f->class_names[c], "%s", classes.items[c]);
            snprintf(d->name, sizeof d->name, "%s", bf_dataset_name(cfg->dataset));
            d->num_samples = n;
            d->c = 3;
            d->h = d->w = cfg->image_size;
            d->num_classes = classes.count;
            d->split = split;
            /* The ImageNet statistics everyone normalises with (torchvision's, FlexNet's). */
            static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
            memcpy(d->mean, mean, sizeof mean);
            memcpy(d->std, std, sizeof std);
            bf_image_plan_options *plan = &f->plan;
            plan->size = cfg->image_size;
            plan->scale_min = cfg->crop_scale_min;
            plan->scale_max = cfg->crop_scale_max;
            plan->ratio_min = cfg->crop_ratio_min;
            plan->ratio_max = cfg->crop_ratio_max;
            if (split == BF_SPLIT_TRAIN) {
                plan->transform = cfg->train_transform ? BF_TRANSFORM_RANDOM_RESIZED_CROP : BF_TRANSFORM_SQUASH;
                plan->flip = cfg->augment_flip;
            } else {
                plan->transform = cfg->val_resize > 0 ? BF_TRANSFORM_CENTER : BF_TRANSFORM_SQUASH;
                plan->resize = cfg->val_resize;
            }
            d->files = f;
        }
    }
    names_free(&classes);
    names_free(&files);
    free(labels);
    if (st != BF_OK) {
        if (d && !d->files) bf_image_files_free(f);
        bf_dataset_free(d);
        return st;
    }
    *out = d;
    return BF_OK;
}

/* --------------------------------------------------------------------------- one sample */

bf_status bf_image_worker_init(bf_image_worker *w, int size) {
    memset(w, 0, sizeof *w);
    BF_TRY(bf_jpeg_decoder_create(&w->decoder));
    w->out = malloc((size_t)size * size * 3);
    if (!w->out) {
        bf_jpeg_decoder_free(w->decoder);
        w->decoder = NULL;
        return bf_error(BF_ERR_OOM, "cannot allocate an image buffer");
    }
    return BF_OK;
}

void bf_image_worker_free(bf_image_worker *w) {
    if (!w) return;
    bf_jpeg_decoder_free(w->decoder);
    free(w->decoded.pixels);
    bf_resampler_free(&w->resampler);
    free(w->out);
    memset(w, 0, sizeof *w);
}

bf_status bf_image_load_sample_u8(const bf_dataset *d, int index, uint64_t seed, bf_image_worker *w, uint8_t *dst) {
    const bf_image_files *f = d->files;
    int iw, ih;
    BF_TRY(bf_jpeg_load(w->decoder, f->paths[index], &iw, &ih));
    bf_image_plan plan = bf_image_plan_make(&f->plan, iw, ih, seed);
    bf_rect in_crop;
    double scale;
    BF_TRY(bf_jpeg_decode_region(w->decoder, plan.crop, d->w, d->h, &w->decoded, &in_crop, &scale));
    return bf_image_resample(&w->resampler, &w->decoded, in_crop, d->w, d->h, plan.flip, dst);
}

bf_status bf_image_load_sample(const bf_dataset *d, int index, uint64_t seed, bf_image_worker *w, float *dst) {
    BF_TRY(bf_image_load_sample_u8(d, index, seed, w, w->out));
    bf_image_to_chw_float(w->out, (size_t)d->w * d->h, dst);
    return BF_OK;
}

int bf_image_class_count(const bf_data_config *cfg) {
    name_list names = {0};
    bf_status st = BF_ERR_IO;
    if (cfg->class_list[0]) {
        st = read_class_list(cfg->class_list, &names);
    } else if (cfg->path[0]) {
        char dir[BF_PATH_MAX + 16];
        snprintf(dir, sizeof dir, "%s/train", cfg->path);
        st = is_dir(dir) ? list_dir(dir, 1, &names) : BF_ERR_IO;
    }
    int count = st == BF_OK ? names.count : 0;
    names_free(&names);
    return count;
}
