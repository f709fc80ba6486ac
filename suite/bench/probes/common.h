#pragma once
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>
static inline double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static void loadavg(const char*tag){FILE*f=fopen("/proc/loadavg","r");char b[128]={0};if(f){fgets(b,127,f);fclose(f);}printf("# loadavg %s: %s",tag,b);}
static uint64_t rng_s=0x9E3779B97F4A7C15ull;
static inline uint64_t rnd(void){rng_s^=rng_s<<13;rng_s^=rng_s>>7;rng_s^=rng_s<<17;return rng_s;}
static inline float frnd(void){return (float)((rnd()>>40)*(1.0/16777216.0))-0.5f;}
static int cmpi(const void*a,const void*b){return *(int*)a-*(int*)b;}
static int cmpd(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
/* constant fan-in mask: idx[out][k] sorted distinct */
static void make_mask(int in,int out,int k,int*idx){
  int*perm=malloc(in*sizeof(int));for(int i=0;i<in;i++)perm[i]=i;
  for(int j=0;j<out;j++){for(int t=0;t<k;t++){int r=t+rnd()%(in-t);int s=perm[t];perm[t]=perm[r];perm[r]=s;}
    memcpy(idx+(size_t)j*k,perm,k*sizeof(int));qsort(idx+(size_t)j*k,k,sizeof(int),cmpi);}
  free(perm);}
/* time: reps x ncalls, print min/median per-call us */
#define TIME(label,ncalls,reps,...) do{ double _r[64]; for(int _w=0;_w<(ncalls)/4+1;_w++){__VA_ARGS__;} \
  for(int _k=0;_k<(reps);_k++){double _t=now();for(int _c=0;_c<(ncalls);_c++){__VA_ARGS__;}_r[_k]=(now()-_t)/(ncalls)*1e6;} \
  qsort(_r,(reps),sizeof(double),cmpd); printf("%-44s min %9.2f  med %9.2f us\n",label,_r[0],_r[(reps)/2]); tmin=_r[0]; tmed=_r[(reps)/2]; }while(0)
