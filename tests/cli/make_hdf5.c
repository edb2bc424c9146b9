/*
 * qv_test_make_hdf5 OUT ROWS DIM: writes a small file shaped like ann-benchmarks' data sets for
 * test_quiverctl_data.py (python3-h5py is not installed):
 *   train      ROWS x DIM float32, train[i][j] = i * 10 + j
 *   test       3 x DIM float64, test[q] = train[q + 1] + 0.25 (so row q's nearest is id q + 1)
 *   neighbors  3 x 1 int32, q + 1
 *   attribute  distance = "euclidean" (a variable-length string, as h5py writes it)
 */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>

static int write_2d(hid_t file, const char *name, hid_t file_type, hid_t mem_type, hsize_t rows,
                    hsize_t cols, const void *data)
{
    hsize_t dims[2] = {rows, cols};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t ds = H5Dcreate2(file, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = ds < 0 ? -1 : H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0)
        H5Dclose(ds);
    H5Sclose(sp);
    return e < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s OUT ROWS DIM\n", argv[0]);
        return 2;
    }
    hsize_t rows = strtoull(argv[2], NULL, 10), dim = strtoull(argv[3], NULL, 10);
    if (rows < 4 || dim < 1 || dim > 4096) {
        fprintf(stderr, "%s: ROWS >= 4 and DIM in 1..4096\n", argv[0]);
        return 2;
    }
    float *train = malloc(rows * dim * sizeof(float));
    double *test = malloc(3 * dim * sizeof(double));
    int32_t neighbors[3] = {1, 2, 3};
    if (train == NULL || test == NULL)
        return 1;
    for (hsize_t i = 0; i < rows; i++)
        for (hsize_t j = 0; j < dim; j++)
            train[i * dim + j] = (float)(i * 10 + j);
    for (hsize_t q = 0; q < 3; q++)
        for (hsize_t j = 0; j < dim; j++)
            test[q * dim + j] = (double)train[(q + 1) * dim + j] + 0.25;
    int rc = 1;
    hid_t file = H5Fcreate(argv[1], H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0)
        goto out;
    if (write_2d(file, "train", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rows, dim, train) != 0 ||
        write_2d(file, "test", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 3, dim, test) != 0 ||
        write_2d(file, "neighbors", H5T_STD_I32LE, H5T_NATIVE_INT32, 3, 1, neighbors) != 0)
        goto out_file;
    const char *distance = "euclidean";
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    H5Tset_cset(st, H5T_CSET_UTF8);
    hid_t as = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, "distance", st, as, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && H5Awrite(a, st, &distance) >= 0)
        rc = 0;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(as);
    H5Tclose(st);
out_file:
    H5Fclose(file);
out:
    free(train);
    free(test);
    if (rc != 0)
        fprintf(stderr, "%s: cannot write %s\n", argv[0], argv[1]);
    return rc;
}
